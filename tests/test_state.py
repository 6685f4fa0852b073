"""A guest's state: what is read of each role (from the same set-up its user-data is rendered from),
the probe as a real shell runs it, and what a drift and a failed repair say."""

from __future__ import annotations

import subprocess

import pytest

import runtime
from guest import state
from lab.addressing import plan
from lab.files import Check
from resources import gueststate
from resources.base import props_of
from runtime.vm import VmRef
from tests.conftest import lab_of, lab_stack_values


def checks_of(mode: str, role: str, **values) -> dict[str, Check]:
    spec, m = lab_of({**lab_stack_values(), "mode": mode, **values})
    p = plan(spec)
    guest = {"lb": p.lb, "web": p.webs[1], "client": p.clients[0]}[role]
    return {c.what: c for c in state.checks(spec, m, p, guest)}


def test_a_dsr_web_is_read_for_its_vip_arp_route_service_and_file():
    web = checks_of("dsr", "web")
    assert web["192.168.16.100/32 on lo"].expect == "1"
    assert web["sysctl net.ipv4.conf.all.arp_ignore"].expect == "1"
    assert web["sysctl net.ipv4.conf.all.arp_announce"].expect == "2"
    assert web["route to 192.168.16.0/24 on eth0"].expect == "192.168.16.0/24 dev eth0"
    assert web["nginx.service running"].expect == "active"
    assert web["/usr/share/nginx/html/dummy_file served"].expect == "200 5120"
    assert web["sysctl net.ipv4.tcp_rmem"].expect == "4096 16384 4194304"  # the seed's profile, tabs as one space


@pytest.mark.parametrize(
    "mode, extra, unit, balancer",
    [
        ("dsr", {}, "l2dsr-ipvs.service", "IPVS real servers"),
        ("dsr", {"ipvsHealthCheck": "keepalived"}, "keepalived.service", "IPVS real servers"),
        ("proxy", {}, "haproxy.service", "HAProxy's servers"),
    ],
)
def test_the_lb_is_read_for_its_balancer(mode, extra, unit, balancer):
    lb = checks_of(mode, "lb", **extra)
    assert lb[f"{unit} running"].expect == "active" and balancer in lb
    assert lb["192.168.16.100/32 on eth0"].expect == "1"  # its own VIP (network-config's)
    if mode == "dsr":
        assert lb[balancer].expect == "172.16.0.101:80 -g 172.16.0.102:80 -g"
    else:
        assert lb[balancer].expect == "web01 web02" and lb["HAProxy's threads"].expect == "1"


def test_a_later_sysctl_file_wins_as_systemd_sysctl_applies_them():
    """The seed's LB tuning (62-...) raises netdev_max_backlog over the profile's (60-...): one check, 9000000."""
    spec, m = lab_of({**lab_stack_values(), "mode": "nat", "lbTuning": "seed", "lbVcpus": 2})
    p = plan(spec)
    found = [c for c in state.checks(spec, m, p, p.lb) if c.what == "sysctl net.core.netdev_max_backlog"]
    assert [c.expect for c in found] == ["9000000"]
    whats = [c.what for c in state.checks(spec, m, p, p.lb)]
    assert len(whats) == len(set(whats))  # every check its own name, as observed() keys them


def test_the_repair_of_a_proxy_lb_writes_back_haproxys_config_as_deployed():
    """A benchmark killed between its thread steps leaves HAProxy on a step's nbthread: the check sees
    the threads, and the repair writes back the deployed haproxy.cfg before restarting HAProxy."""
    import base64

    from lbmodes.proxy import haproxy_cfg

    spec, m = lab_of({**lab_stack_values(), "mode": "proxy", "benchThreads": [1, 2], "lbVcpus": 2})
    p = plan(spec)
    lb = state.repair_command(spec, m, p, p.lb)
    written = base64.b64decode(lb.split("echo ", 1)[1].split()[0]).decode()
    assert written == haproxy_cfg(spec, p) and f"nbthread {spec.haproxy_threads}" in written
    assert lb.index("/etc/haproxy/haproxy.cfg") < lb.index("systemctl restart haproxy.service")
    assert any(c.what == "HAProxy's threads" for c in state.checks(spec, m, p, p.lb))


def test_the_repair_reapplies_the_role_without_rewriting_a_file():
    spec, m = lab_of({**lab_stack_values(), "mode": "dsr"})
    p = plan(spec)
    web = state.repair_command(spec, m, p, p.webs[0])
    assert web == (
        "sudo sh -c 'systemctl restart systemd-sysctl.service && /usr/local/sbin/l2dsr-net && "
        "systemctl restart nginx.service'"
    )
    lb = state.repair_command(spec, m, p, p.lb)
    assert "ip addr replace 192.168.16.100/32 dev eth0" in lb and "systemctl restart l2dsr-ipvs.service" in lb


def test_the_probe_runs_in_a_real_shell_and_reads_each_checks_first_line():
    items = (
        Check("two lines", "echo first; echo second", "first"),
        Check("fails", "false", "x"),
        Check("tabs", "printf 'a\\t b   c\\n'", "a b c"),
        Check("stderr only", "echo oops >&2", ""),
    )
    out = subprocess.run(["sh"], input=state.probe_script(items), capture_output=True, text=True).stdout
    seen = state.observed(out, items)
    assert seen == {"two lines": "first", "fails": "", "tabs": "a b c", "stderr only": ""}
    assert state.differences(items, seen) == ["fails: expected 'x', found ''"]


def test_sysctls_are_read_by_one_sysctl_and_matched_by_key():
    items = (
        Check("sysctl net.ipv4.tcp_rmem", "sysctl -n net.ipv4.tcp_rmem", "4096 16384 4194304"),
        Check("sysctl kernel.ostype", "sysctl -n kernel.ostype", "Linux"),
        Check("sysctl no.such.key", "sysctl -n no.such.key", "1"),
        Check("after", "echo ok", "ok"),
    )
    script = state.probe_script(items)
    assert script.count("sysctl -e ") == 1 and "sysctl -n" not in script
    out = subprocess.run(["sh"], input=script, capture_output=True, text=True).stdout  # this machine's sysctl
    seen = state.observed(out, items)
    assert seen["sysctl kernel.ostype"] == "Linux" and seen["after"] == "ok" and seen["sysctl no.such.key"] == ""
    assert len(seen["sysctl net.ipv4.tcp_rmem"].split()) == 3  # tabs read as single spaces


def test_a_long_list_of_differences_is_cut_for_the_message():
    found = [f"sysctl k{i}: expected '1', found '0'" for i in range(7)]
    assert state.summary(found).endswith("sysctl k3: expected '1', found '0'; and 3 more")


def args_of(items: tuple[Check, ...]) -> dict:
    return props_of(
        gueststate.GuestStateArgs(VmRef("web01", "web", "172.16.0.101", "d", ""), items, "sudo repair", "b", "lab", "k")
    )


def test_a_repair_that_does_not_take_fails_with_what_is_still_wrong(monkeypatch):
    items = (Check("192.168.16.100/32 on lo", "x", "1"), Check("nginx.service running", "y", "active"))
    repaired = []
    monkeypatch.setattr(
        gueststate, "read_guest", lambda args: {"192.168.16.100/32 on lo": "0", "nginx.service running": "active"}
    )
    monkeypatch.setattr(gueststate, "repair", lambda args: repaired.append(args.repair))
    monkeypatch.setattr(gueststate, "SETTLE_S", 0)
    with pytest.raises(runtime.LabFailure) as e:
        gueststate.GuestStateProvider().create(args_of(items))
    assert repaired == ["sudo repair"]
    assert str(e.value) == (
        "web01: still not as its role set it up after re-applying it in place (0 s): 192.168.16.100/32 on lo: "
        "expected '1', found '0'. Replace the VM: pulumi up --replace <its domain's URN>"
    )


def test_drift_names_each_difference_and_asks_for_a_new_state(monkeypatch):
    items = (Check("nginx.service running", "y", "active"),)
    notes = []
    monkeypatch.setattr(gueststate, "read_guest", lambda args: {"nginx.service running": "inactive"})
    monkeypatch.setattr(gueststate, "drift_note", notes.append)
    assert gueststate.GuestStateProvider().drift(args_of(items)) == ["observed"]
    assert notes == [
        "web01 drifted, and will be put back in place: nginx.service running: expected 'active', found 'inactive'"
    ]
    monkeypatch.setattr(gueststate, "read_guest", lambda args: {"nginx.service running": "active"})
    assert gueststate.GuestStateProvider().drift(args_of(items)) == []
