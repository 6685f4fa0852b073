"""One real guest from the built image: libvirt, a cloud-init seed, SSH, and what cloud-init did.

No Pulumi here: the lab's own XML and seed rendering, straight through virsh, so a failure points
at the image or the host rather than the engine. Measurements go to results/measurements/.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from bench import counters
from guest import render
from hypervisor import libvirt, paths
from lab.addressing import mac_address, plan
from loadtools import TOOLS, Load
from resources.volume import seed_iso
from runtime import hostfacts
from runtime.ssh import KeyFile, Ssh
from runtime.vm import VmRef
from tests.conftest import lab_of
from virt.readiness import boot_budget_s, domain_cpu_seconds, wait_ready
from virt.virsh import Virsh
from virt.xml import DomainDef, NetworkDef, console_log_path, domain_xml, network_xml, volume_xml

pytestmark = pytest.mark.lab
NAME = "l2dsr-boottest"
URL = "http://127.0.0.1/dummy_file"
CONFIG = {
    "webCount": 1,
    "frontSubnet": "192.168.99.0/24",
    "serverSubnet": "172.16.99.0/24",
    "firstWebAddress": "172.16.99.101",
    "vip": "192.168.99.100",
    "webMemoryMiB": 512,  # as the lab stack (Pulumi.lab.yaml): the estimate plus headroom
}


def qemu_rss_mib(domain: str) -> float:
    pid = Path(f"/run/libvirt/qemu/{domain}.pid").read_text().strip()
    return int(subprocess.run(["ps", "-o", "rss=", "-p", pid], capture_output=True, text=True).stdout) / 1024


def leftovers(virsh: Virsh) -> list[str]:
    found = [d for d in virsh.run("list", "--all", "--name").split() if d.startswith(NAME)]
    found += [n for n in virsh.run("net-list", "--all", "--name").split() if n.startswith(NAME)]
    found += [line.split()[0] for line in virsh.run("vol-list", "default").splitlines() if line.startswith(NAME)]
    return found


def test_a_guest_boots_from_the_image_and_cloud_init_configures_it(tmp_path):
    built = hostfacts.builtin_image()
    assert built.exists(), "run through ./labctl test (it builds the image)"
    virsh = Virsh(libvirt.URI)
    spec, mode = lab_of(CONFIG)
    p = plan(spec)
    web = p.webs[0]
    key = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    user_data = render.user_data(spec, mode, p, web, (tmp_path / "id.pub").read_text())
    net_cfg = render.network_config(p, web)
    iso = tmp_path / "seed.iso"
    seed_iso(user_data, render.meta_data(NAME, web, user_data, net_cfg), net_cfg, iso)
    domain_type = hostfacts.resolve_domain_type("auto")
    measured: dict[str, object] = {"domain_type": domain_type}
    try:
        virsh.network_define_start(network_xml(NetworkDef(NAME, "l2dsr-boot0", (("172.16.99.1", 24),))), NAME)
        virsh.volume_create("default", volume_xml(f"{NAME}.qcow2", 4 * 2**30, "qcow2", backing_path=str(built.disk)))
        virsh.volume_create("default", volume_xml(f"{NAME}-seed.iso", iso.stat().st_size, "raw"))
        virsh.volume_upload("default", f"{NAME}-seed.iso", str(iso))
        start = time.monotonic()
        virsh.domain_define_start(
            domain_xml(
                DomainDef(
                    name=NAME,
                    domain_type=domain_type,
                    vcpus=1,
                    memory_mib=spec.memory_mib["web"],
                    pool="default",
                    disk_volume=f"{NAME}.qcow2",
                    seed_volume=f"{NAME}-seed.iso",
                    network=NAME,
                    mac=mac_address(web),
                    kernel=str(built.kernel),
                    initrd=str(built.initrd),
                    cmdline=hostfacts.kernel_cmdline(),
                )
            ),
            NAME,
        )

        with KeyFile(key.read_text()) as key_file:
            ssh = Ssh(render.LOGIN_USER, key_file)
            # The lab's own wait (console, domain state, then cloud-init over SSH): an SSH session can end
            # empty while sshd restarts during boot, and a failure reports what the guest says.
            guest_ = VmRef(web.name, web.role, str(web.address), NAME, console_log_path(NAME))
            ready = wait_ready(
                guest_,
                render.final_message(web),
                ssh,
                virsh,
                boot_budget_s(domain_type, 1, os.cpu_count() or 1),
                group=NAME,
            )
            measured["seconds_to_cloud_init_done"] = round(time.monotonic() - start, 1)
            measured["memory_available_mib"] = ready.memory_available_mib
            measured["cpu_seconds_to_ready"] = domain_cpu_seconds(virsh, NAME)
            assert "status: done" in ssh.run(str(web.address), "cloud-init status").stdout
            measured["qemu_rss_mib"] = round(qemu_rss_mib(NAME), 1)

            def guest(cmd: str) -> str:
                return ssh.run(str(web.address), cmd).stdout.strip()

            assert guest("hostname") == "web01"
            assert "Out of memory" not in guest("sudo dmesg")
            # What the image masks to boot lighter (hypervisor/image.py) leaves no unit failing.
            assert guest("systemctl --failed --no-legend --plain") == ""
            assert guest("cat /proc/sys/net/core/somaxconn") == "500000"  # the seed's web sysctl profile
            assert guest(
                "cat /proc/sys/net/ipv4/conf/all/arp_ignore /proc/sys/net/ipv4/conf/eth0/arp_announce"
            ).split() == ["1", "2"]
            assert "192.168.99.100/32" in guest("ip -4 addr show dev lo")
            assert "192.168.99.0/24 dev eth0" in guest("ip route")
            assert guest("curl -s -o /dev/null -w '%{size_download}' http://127.0.0.1/dummy_file") == "5120"
            assert guest("systemctl is-enabled nginx l2dsr-net").split() == ["enabled", "enabled"]
            # Both load tools run on the image as the benchmark runs them, and their real output parses,
            # with its latency distribution (kept as parser test data); nginx counts their connections.
            accepted = int(guest(f"{counters.ACCEPTED}"))
            wrk_load, ab_load = Load(URL, 10, 600, True), Load(URL, 10, 500, False)
            wrk = guest(TOOLS["wrk"].run(wrk_load))
            ab = guest(TOOLS["ab"].run(ab_load))
            wrk_run, ab_run = TOOLS["wrk"].parse(wrk, wrk_load, 5120), TOOLS["ab"].parse(ab, ab_load, 5120)
            assert wrk_run.complete_requests > 0 and len(wrk_run.latency_histogram_us) > 10
            # wrk's 1,000 per-mille points, each weighted by its request count
            assert sum(wrk_run.latency_histogram_us.values()) == 1000 * wrk_run.complete_requests
            assert ab_run.complete_requests == 500 == sum(ab_run.latency_histogram_us.values())
            assert int(guest(f"{counters.ACCEPTED}")) - accepted >= 10 + 500  # wrk's 10, ab's 500, and the readings
            samples = paths.PROJECT_DIR / "results" / "measurements"
            samples.mkdir(parents=True, exist_ok=True)
            (samples / "wrk-sample.txt").write_text(wrk + "\n")
            # Where a boot's time goes (what the image could hold instead of doing it at boot).
            (samples / "boot-blame.txt").write_text(
                guest(
                    "systemd-analyze 2>&1; systemd-analyze blame 2>&1 | head -25; "
                    "sudo cloud-init analyze blame 2>&1 | head -40"
                )
                + "\n"
            )
            assert "PasswordAuthentication no" in guest("sudo sshd -T | grep -i '^passwordauthentication'").replace(
                "passwordauthentication", "PasswordAuthentication"
            )
    finally:
        if virsh.domain(NAME):
            virsh.domain_remove(NAME)
        virsh.volume_delete("default", f"{NAME}.qcow2")
        virsh.volume_delete("default", f"{NAME}-seed.iso")
        if virsh.network(NAME):
            virsh.network_remove(NAME)
        out = paths.PROJECT_DIR / "results" / "measurements"
        out.mkdir(parents=True, exist_ok=True)
        (out / "boot.json").write_text(json.dumps(measured, indent=1))
        print(f"\nboot measurements: {measured}")
    assert leftovers(virsh) == []
