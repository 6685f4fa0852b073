"""Every rendered file, checked by the tool that will read it, and against the seed's own values.

haproxy -c, keepalived -t, nginx -t and `cloud-init schema` are Debian's, installed by `./labctl test`. Golden
files make any change to what reaches a VM (tests/cases/render-*/rendered/, checked by
tests/test_cases.py, libvirt XML included) visible in review; regenerate them with
L2DSR_UPDATE_GOLDEN=1 after an intended change.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

import lbmodes
from bench.counters import SERVED
from guest import render
from lab.addressing import plan
from lab.files import fill
from lbmodes.ipvs import LB_KIND, ipvsadm_rules, keepalived_conf
from lbmodes.proxy import haproxy_cfg
from tests.conftest import lab_stack_values, spec_of

DATA = Path(__file__).parent / "data"
GOLDEN = Path(__file__).parent / "golden"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGolden l2dsr-test"


def need(tool: str) -> str:
    path = shutil.which(tool) or (f"/usr/sbin/{tool}" if Path(f"/usr/sbin/{tool}").exists() else None)
    if not path:
        pytest.fail(f"{tool} is not installed: run the tests through ./labctl test (it installs the checkers)")
    return path


def sysctl_pairs(text: str) -> dict[str, str]:
    pairs = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, value = line.split("=", 1)
            pairs[key.strip().lstrip("-")] = " ".join(value.split())
    return pairs


# ---- against the seed ----------------------------------------------------------------------------


@pytest.mark.parametrize("role, seed", [("client", "client"), ("web", "server"), ("lb", "server")])
def test_sysctl_profiles_are_the_seeds(role, seed):
    assert sysctl_pairs(render.sysctl_profile(role)) == sysctl_pairs((DATA / f"seed-sysctl-{seed}.txt").read_text())


def test_web_arp_settings_are_the_seeds():
    ours = sysctl_pairs(fill("web/vip-arp.conf"))
    assert ours == sysctl_pairs((DATA / "seed-sysctl-arp.txt").read_text())


def test_ipvsadm_rules_are_the_seeds_commands():
    spec = spec_of()
    seed = [line.removeprefix("ipvsadm ") for line in (DATA / "seed-ipvsadm.txt").read_text().splitlines() if line]
    assert ipvsadm_rules(spec, plan(spec), lbmodes.MODES["dsr"].forwarding).splitlines() == seed


def test_haproxy_backend_lists_every_web_with_check():
    spec = spec_of()
    cfg = haproxy_cfg(spec, plan(spec))
    servers = [line.split() for line in cfg.splitlines() if line.strip().startswith("server ")]
    assert servers == [["server", f"web{i:02d}", f"172.16.0.{100 + i}:80", "check"] for i in range(1, 26)]
    assert "balance     roundrobin" in cfg and "nbthread 4" in cfg and "cpu-map 1/1-4 0-3" in cfg


def test_haproxy_cpu_map_follows_the_lb_vcpus():
    spec = spec_of({"haproxyThreads": 8, "lbVcpus": 2})
    assert "cpu-map 1/1-8 0-1" in haproxy_cfg(spec, plan(spec))


# ---- checked by the real tools ----------------------------------------------------------------------


@pytest.mark.parametrize("values", [{}, {"https": True}, {"haproxyThreads": 1, "lbVcpus": 1, "webCount": 2}])
def test_haproxy_accepts_the_config(tmp_path, values):
    spec = spec_of(values)
    cert = tmp_path / "server.pem"
    if spec.https:
        key = tmp_path / "server.key"
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-nodes",
                "-newkey",
                "rsa:2048",
                "-days",
                "1",
                "-subj",
                "/CN=test",
                "-keyout",
                str(key),
                "-out",
                str(tmp_path / "server.crt"),
            ],
            check=True,
            capture_output=True,
        )
        cert.write_text((tmp_path / "server.crt").read_text() + key.read_text())
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(haproxy_cfg(spec, plan(spec), cert=str(cert)))
    done = subprocess.run([need("haproxy"), "-c", "-f", str(cfg)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


IPVS_MODES = [m for m in lbmodes.MODES.values() if getattr(m, "forwarding", None)]


@pytest.mark.parametrize("mode", IPVS_MODES, ids=lambda m: m.name)
@pytest.mark.parametrize("check", [{}, {"ipvsCheck": "tcp", "ipvsCheckIntervalS": 1, "ipvsCheckFall": 1}])
def test_keepalived_accepts_the_config(tmp_path, mode, check):
    spec = spec_of({"mode": mode.name, "ipvsHealthCheck": "keepalived", **check})
    conf = tmp_path / "keepalived.conf"
    conf.write_text(keepalived_conf(spec, plan(spec), mode.forwarding))
    done = subprocess.run([need("keepalived"), "-t", "-f", str(conf)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    text = conf.read_text()
    assert f"lb_kind {LB_KIND[mode.forwarding]}" in text and text.count("real_server ") == spec.web_count


def test_keepalived_refuses_a_broken_config(tmp_path):
    """The check above can fail: keepalived -t names the line of a bad forwarding method."""
    spec = spec_of({"mode": "dsr", "ipvsHealthCheck": "keepalived"})
    conf = tmp_path / "keepalived.conf"
    conf.write_text(keepalived_conf(spec, plan(spec), "-g").replace("lb_kind DR", "lb_kind XX"))
    done = subprocess.run([need("keepalived"), "-t", "-f", str(conf)], capture_output=True, text=True)
    assert done.returncode != 0 and "unknown [XX] routing method" in done.stdout + done.stderr


def test_keepalived_keeps_the_seeds_service_and_thresholds():
    """The same virtual service as the seed's ipvsadm lines: rr, one real server per web, -x/-y as u/lthreshold."""
    spec = spec_of({"mode": "dsr", "ipvsHealthCheck": "keepalived"})
    text = keepalived_conf(spec, plan(spec), "-g")
    assert f"virtual_server {spec.vip} 80" in text and "lb_algo rr" in text
    reals = [line.split()[1] for line in text.splitlines() if line.strip().startswith("real_server")]
    assert reals == [str(w.address) for w in plan(spec).webs]
    assert text.count(f"uthreshold {spec.ipvs_upper_threshold}") == spec.web_count
    assert text.count(f"lthreshold {spec.ipvs_lower_threshold}") == spec.web_count
    assert "retry 2" in text and "delay_loop 2" in text and "path /dummy_file?l2dsr-health-check" in text


def test_keepalived_checks_are_not_counted_as_the_benchmarks_requests():
    """The benchmark counts access-log lines of ' /dummy_file ' (bench/counters.py); a check's line must not be one."""
    counted = SERVED.split("'")[1]
    check_line = '172.16.0.2 - - [30/Nov/2026:05:50:00 +0000] "GET /dummy_file?l2dsr-health-check HTTP/1.0" 200 5120'
    bench_line = '192.168.16.11 - - [30/Nov/2026:05:50:00 +0000] "GET /dummy_file HTTP/1.0" 200 5120'
    assert counted == " /dummy_file " and counted not in check_line and counted in bench_line


@pytest.mark.parametrize("family", ["debian"])
def test_nginx_accepts_the_config(tmp_path, family):
    spec = spec_of({"imageFamily": family})
    conf = tmp_path / "nginx.conf"
    conf.write_text(render.nginx_conf(spec))
    done = subprocess.run([need("nginx"), "-t", "-c", str(conf)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def all_user_data(values: dict) -> dict[str, str]:
    spec = spec_of(values)
    p = plan(spec)
    return {h.name: render.user_data(spec, lbmodes.MODES[spec.mode], p, h, KEY) for h in p.guests}


VARIANTS = {  # every mode on the lab stack, then the variants that change what cloud-init gets
    **{name: {**lab_stack_values(), "mode": name} for name in lbmodes.MODES},
    "proxy-https-cloud-image": {
        **lab_stack_values(),
        "mode": lbmodes.BASELINE.name,
        "https": True,
        "image": "https://example.invalid/x.qcow2",
    },
    "dsr-rhel": {**lab_stack_values(), "mode": "dsr", "image": "/srv/rocky.qcow2", "imageFamily": "rhel"},
}


@pytest.mark.parametrize(
    "values",
    list(VARIANTS.values()),
    ids=list(VARIANTS),
)
def test_cloud_init_accepts_every_user_data(tmp_path, values):
    for name, text in all_user_data(values).items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        done = subprocess.run([need("cloud-init"), "schema", "-c", str(path)], capture_output=True, text=True)
        assert done.returncode == 0 and "Valid" in done.stdout, f"{name}: {done.stdout}{done.stderr}"


def test_user_data_is_ssh_key_only_and_installs_nothing_on_the_builtin_image():
    for name, text in all_user_data(lab_stack_values()).items():
        doc = yaml.safe_load(text)
        assert doc["ssh_pwauth"] is False and doc["users"][0]["lock_passwd"] is True, name
        assert doc["users"][0]["ssh_authorized_keys"] == [KEY]
        assert "packages" not in doc and doc["package_update"] is False, name


def test_cloud_images_get_their_familys_packages():
    spec = spec_of({"mode": "dsr", "image": "/srv/rocky.qcow2", "imageFamily": "rhel"})
    p = plan(spec)
    assert "ipvsadm" in render.role_packages(spec, lbmodes.MODES[spec.mode], p, p.lb)
    assert "httpd-tools" in render.role_packages(spec, lbmodes.MODES[spec.mode], p, p.clients[0])
    assert "user nginx;" in render.nginx_conf(spec)


def test_webs_are_identical_in_both_modes_and_the_lb_is_not():
    proxy = all_user_data({**lab_stack_values(), "mode": "proxy"})
    dsr = all_user_data({**lab_stack_values(), "mode": "dsr"})
    assert [n for n in proxy if proxy[n] != dsr[n]] == ["lb"]
    assert "haproxy.cfg" in proxy["lb"] and "ipvsadm.rules" in dsr["lb"]


def net_lines(mode: str, role: str) -> tuple[str, ...]:
    spec = spec_of({"mode": mode})
    p = plan(spec)
    return render.role_setup(
        spec, lbmodes.MODES[spec.mode], p, {"web": p.webs[0], "client": p.clients[0], "lb": p.lb}[role]
    ).net


def test_web_holds_the_vip_on_lo_and_routes_the_front_on_link():
    for mode in ("proxy", "dsr"):
        assert net_lines(mode, "web") == (
            "ip route replace 192.168.16.0/24 dev eth0",
            "ip addr replace 192.168.16.100/32 dev lo",
        )
        assert net_lines(mode, "client") == ("ip route replace 172.16.0.0/24 dev eth0",)
        assert net_lines(mode, "lb") == ()  # the LB holds both subnets and the VIP on eth0 itself


def test_l3dsr_web_holds_the_vip_on_the_tunnel_and_replies_on_link():
    lines = net_lines("l3dsr", "web")
    assert "ip addr replace 192.168.16.100/32 dev tunl0" in lines and "ip link set tunl0 up" in lines
    assert "ip route replace 192.168.16.0/24 dev eth0" in lines and not any("dev lo" in x for x in lines)
    spec = spec_of({"mode": "l3dsr"})
    files, commands = render.role_files(spec, lbmodes.MODES[spec.mode], plan(spec), plan(spec).webs[0])
    tunnel = sysctl_pairs(next(f.content for f in files if f.path.endswith("l3dsr.conf")))
    assert tunnel["net.ipv4.conf.tunl0.rp_filter"] == "0" and tunnel["net.ipv4.conf.eth0.arp_ignore"] == "1"
    # The module (and so tunl0) exists before the sysctls that name it are applied.
    assert commands.index("modprobe -a nf_conntrack ipip") < commands.index("systemctl restart systemd-sysctl.service")
    assert " -i " in ipvsadm_rules(spec, plan(spec), lbmodes.MODES["l3dsr"].forwarding)


def test_nat_webs_hold_no_vip_and_reply_through_the_lb():
    assert net_lines("nat", "web") == ("ip route replace 192.168.16.0/24 via 172.16.0.2 dev eth0",)
    spec = spec_of({"mode": "nat"})
    p = plan(spec)
    assert str(p.lb_server_address) == "172.16.0.2" and p.lb_server_address in p.server
    lb_files, _ = render.role_files(spec, lbmodes.MODES[spec.mode], p, p.lb)
    assert (
        sysctl_pairs(next(f.content for f in lb_files if f.path.endswith("nat.conf")))[
            "net.ipv4.conf.all.send_redirects"
        ]
        == "0"
    )
    rules = next(f.content for f in lb_files if f.path == "/etc/l2dsr/ipvsadm.rules")
    assert rules.count(" -m ") == len(p.webs) and " -g " not in rules


def test_dummy_file_has_the_configured_size(tmp_path):
    spec = spec_of({"benchFileSizeKiB": 7})
    p = plan(spec)
    _, commands = render.role_files(spec, lbmodes.MODES[spec.mode], p, p.webs[0])
    made = next(c for c in commands if "dummy_file" in c)
    subprocess.run(["sh", "-c", made.replace(render.NGINX_ROOT, str(tmp_path))], check=True)
    assert (tmp_path / "dummy_file").stat().st_size == 7 * 1024


def test_roles_start_their_services_last_and_stop_at_the_first_failure():
    from runtime import hostfacts

    started: dict[str, list[str]] = {}
    for mode in lbmodes.MODES:
        spec = spec_of({**lab_stack_values(), "mode": mode})
        p = plan(spec)
        for host in p.guests:
            _, commands = render.role_files(spec, lbmodes.MODES[spec.mode], p, host)
            assert commands[0] == "set -eux"  # the first failing command ends cloud-init in error
            start = next(c for c in commands if c.startswith("systemctl start "))
            units = start.split()[2:]
            assert commands[-1] == start  # after every file and setting
            assert f"SYSTEMCTL_SKIP_SYSV=1 systemctl --no-reload enable {' '.join(units)}" in commands
            assert sum("daemon-reload" in c for c in commands) == 1  # each reload costs seconds under TCG
            started[f"{mode}/{host.role}"] = units
    assert started["proxy/web"] == ["l2dsr-net.service", "nginx.service"]
    assert started["proxy/lb"] == ["haproxy.service"]
    assert started["dsr/lb"] == started["l3dsr/lb"] == started["nat/lb"] == ["l2dsr-ipvs.service"]
    assert started["nat/web"] == started["l3dsr/web"] == started["proxy/web"]
    assert started["proxy/client"] == ["l2dsr-net.service"]
    # Every packaged unit a role starts is one the image ships masked, and the role unmasks it.
    packaged = {u for units in started.values() for u in units if not u.startswith("l2dsr-")}
    assert packaged <= set(hostfacts.Recipe.load().role_units)
    spec = spec_of(lab_stack_values())
    assert (
        "systemctl --no-reload unmask nginx.service"
        in render.role_files(spec, lbmodes.MODES[spec.mode], plan(spec), plan(spec).webs[0])[1]
    )


def test_the_seeds_lb_tuning_isolates_vcpus_and_pins_every_queue_to_them():
    from lab.tuning import LbTuning, cpu_range

    four = LbTuning(4)
    assert (four.isolated, four.queues, four.kernel_args) == ([1, 2, 3], 4, "isolcpus=1-3")
    assert [four.irq_cpu(q) for q in range(4)] == [1, 2, 3, 1]  # round robin over the isolated vCPUs
    assert four.host_pins(8) == [4, 5, 6, 7] and four.host_pins(2) == [0, 1, 0, 1]
    assert cpu_range([1]) == "1" and cpu_range([1, 2]) == "1-2"
