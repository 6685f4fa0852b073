"""The deep lab across two (simulated) hosts, placed as Pulumi.twohost.yaml places them: a host that
cannot be reached is refused before anything is created (what runs on the other host keeps running);
dsr with the webs on h2, proven by the LB's share and the tunnel's counters, the MTU by a full frame,
and seen on the wire (status, captures on the LB's tap and on web01's tap on h2, the picture); a
tunnel end changed by hand is drift that up repairs; proxy across the hosts, seen on the wire. Runs
alone too (`./labctl test -m deep -k hosts`): it then builds the lab on two hosts from nothing."""

from __future__ import annotations

import json

import pytest

from hypervisor import libvirt, simhosts
from hypervisor.vmssh import host_refs
from runtime.ssh import KeyFile
from tests.conftest import stack_outputs
from tests.e2e.hosts import HOSTS_LOG, TWO_HOSTS_PLACEMENT, responses_bytes, tunnel_bytes
from tests.e2e.lab import (
    LOAD,
    SMALL_MATRIX,
    STACK,
    Run,
    check_guests,
    check_results,
    domains,
    lab_ssh,
    private_key,
    replaced_in_plan,
    set_matrix,
)
from tests.e2e.seeing import seen_on_the_wire
from virt.tunnel import interface_name

pytestmark = [pytest.mark.lab, pytest.mark.deep]


def on_two_hosts(run: Run, mode: str) -> None:
    two_hosts = {"hosts": simhosts.inventory(simhosts.read()), "placement": TWO_HOSTS_PLACEMENT}
    set_matrix(run.cli, {**two_hosts, **SMALL_MATRIX, **LOAD[mode], "lbTuning": "none", "lbVcpus": 1})
    run.cli("config", "set", "l2dsr:mode", mode)


def test_an_unreachable_host_is_refused_before_anything_is_made(run: Run) -> None:
    cli = run.cli
    simhosts.up(2, HOSTS_LOG)
    h2 = next(h for h in simhosts.read() if h.name == "h2")
    before = recorded(cli)
    on_h1 = domains(run.virsh)
    assert libvirt.stop(h2.pids["libvirtd"])  # h2's libvirtd only: h1 and h2's sshd stay
    try:
        on_two_hosts(run, "dsr")
        with run.timed("unreachable"):
            refused = cli("up", "--yes", "--skip-preview", check=False)
    finally:
        simhosts.up(2, HOSTS_LOG)  # h2's libvirtd again
    text = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "Traceback" not in text, text[-3000:]
    assert "l2dsr:hosts: 1 of 2 host(s) cannot be used, so nothing was created on any host" in text, text[-3000:]
    assert "host h2 (qemu+ssh://root@10.254.0.2/system" in text and "does not answer" in text, text[-3000:]
    run.seen["unreachable"] = [next(line.strip() for line in text.splitlines() if "host h2 (qemu+ssh" in line)]
    assert recorded(cli) == before
    assert domains(run.virsh) == on_h1  # nothing made on h1, and what ran there kept running


def recorded(cli) -> set[str]:
    """The resources the stack's state records, but its root: a refused first `up` records the root
    (pulumi:pulumi:Stack) and nothing else."""
    resources = json.loads(cli("stack", "export").stdout).get("deployment", {}).get("resources") or []
    return {r["urn"] for r in resources if r["type"] != "pulumi:pulumi:Stack"}


def test_dsr_across_two_hosts(run: Run) -> None:
    cli = run.cli
    simhosts.up(2, HOSTS_LOG)
    on_two_hosts(run, "dsr")
    run.up("two_hosts_dsr")
    out = run.results["dsr-two-hosts"] = stack_outputs(cli)
    assert {vm["name"].rsplit("-", 1)[-1]: vm["host"] for vm in out["vms"]} == {
        "client01": "h1", "client02": "h1", "lb": "h1", "web01": "h2", "web02": "h2"
    }  # fmt: skip
    assert "web02     web     h2" in out["placement"]
    check_results(out, "dsr", SMALL_MATRIX)
    assert all(r["flags"] == [] for r in out["results"]), out["resultsTable"]  # balanced within 5%
    run.memory["dsr-two-hosts"] = check_guests(cli, "dsr")
    with KeyFile(private_key(cli)) as key:
        ssh = lab_ssh(out, key)
        vms = {vm["name"].rsplit("-", 1)[-1]: vm["address"] for vm in out["vms"]}
        assert {n: ssh.run(a, "cat /sys/class/net/eth0/mtu").stdout.strip() for n, a in vms.items()} == dict.fromkeys(
            vms, "1450"
        )
        # A full frame (1422 + 28 = 1450 bytes of IP, 1500 once encapsulated) crosses unfragmented both ways.
        full = ssh.run(vms["client01"], f"ping -M do -s 1422 -c 3 -W 3 {vms['web01']}", check=False)
        assert full.returncode == 0, full.stdout + full.stderr
        assert ssh.run(vms["web01"], f"ping -M do -s 1422 -c 3 -W 3 {vms['client01']}", check=False).returncode == 0
        too_big = ssh.run(vms["client01"], f"ping -M do -s 1423 -c 1 -W 3 {vms['web01']}", check=False)
        assert "message too long, mtu=1450" in too_big.stdout + too_big.stderr
    tunnel = tunnel_bytes(out)
    # The webs' replies leave h2 through its tunnel, straight to the clients' host; what h1 sends
    # (requests) is a fraction of it, and the LB's share (check_results) says they went around the LB.
    assert tunnel["h2"]["tx"] >= responses_bytes(out), (tunnel, responses_bytes(out))
    assert tunnel["h1"]["tx"] < 0.3 * tunnel["h2"]["tx"], tunnel
    run.seen["tunnel_bytes_dsr"] = [json.dumps(tunnel)]


@pytest.mark.needs("test_dsr_across_two_hosts")
def test_dsr_across_two_hosts_seen_on_the_wire(run: Run, tmp_path) -> None:
    """web01's tap is on h2: its capture runs there, through h2's SSH."""
    seen_on_the_wire(run, tmp_path, "dsr-two-hosts", hosts=2, replies_bypass=True)


@pytest.mark.needs("test_dsr_across_two_hosts")
def test_a_tunnel_end_changed_by_hand_is_repaired(run: Run) -> None:
    """The tunnel is a resource like the others: a flood entry removed by hand on h2 is drift at
    preview, and `up` makes that end again (nothing else changes, the benchmark does not rerun)."""
    h2 = host_refs(stack_outputs(run.cli))["h2"]
    h2.run(f"bridge fdb del 00:00:00:00:00:00 dev {interface_name(STACK)} dst 10.254.0.1")
    assert replaced_in_plan(run.cli) == ["network-vxlan-h2"]
    run.up("tunnel_repaired", timeout=1200)
    assert "dst 10.254.0.1" in h2.run(f"bridge fdb show dev {interface_name(STACK)}").stdout


@pytest.mark.needs("test_dsr_across_two_hosts")
def test_proxy_across_two_hosts(run: Run) -> None:
    cli = run.cli
    tunnel = tunnel_bytes(stack_outputs(cli))
    on_two_hosts(run, "proxy")
    run.up("two_hosts_proxy")
    out = run.results["proxy-two-hosts"] = stack_outputs(cli)
    check_results(out, "proxy", SMALL_MATRIX)
    after = tunnel_bytes(out)
    delta = {h: {k: after[h][k] - tunnel[h][k] for k in ("tx", "rx")} for h in after}
    assert delta["h2"]["tx"] >= responses_bytes(out), (delta, responses_bytes(out))
    run.seen["tunnel_bytes_proxy"] = [json.dumps(delta)]
    run.memory["proxy-two-hosts"] = check_guests(cli, "proxy")


@pytest.mark.needs("test_proxy_across_two_hosts")
def test_proxy_across_two_hosts_seen_on_the_wire(run: Run, tmp_path) -> None:
    seen_on_the_wire(run, tmp_path, "proxy-two-hosts", hosts=2, replies_bypass=False)
