"""A lab across several hosts, without a lab: the inventory, the preview's probe of each host, the
VXLAN end of one host made, read and removed for real in a throwaway network namespace, and the SSH
that reaches a remote host's guests through it. Placement and the rendered tunnels are case folders
(tests/cases/hosts-*)."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from lab.inventory import read_hosts
from lab.spec import HostSpec
from runtime.hostshell import HostRef, ref_of
from runtime.ssh import Ssh
from runtime.vm import VmRef
from tests.conftest import spec_of
from virt.hosts import probe, unreachable_message
from virt.tunnel import TunnelEnd, differences, parse_state


def test_no_inventory_is_the_single_host_of_libvirt_uri():
    spec = spec_of({})
    assert spec.hosts == (HostSpec("local", "qemu:///system"),)
    assert spec.hosts[0].local and not ref_of(spec.hosts[0]).remote


def test_a_remote_host_is_reached_over_ssh_and_home_is_expanded(monkeypatch):
    monkeypatch.setenv("HOME", "/home/me")
    hosts, problems = read_hosts(
        [
            {"name": "h1", "uri": "qemu:///system", "address": "10.0.0.1"},
            {"name": "h2", "uri": "qemu+ssh://root@10.0.0.2/system?keyfile=~/k", "address": "10.0.0.2",
             "identityFile": "~/k"},
        ],
        "qemu:///system",
        False,
    )  # fmt: skip
    assert problems == []
    h1, h2 = hosts
    assert h1.local and not h2.local
    assert h2.uri == "qemu+ssh://root@10.0.0.2/system?keyfile=/home/me/k" and h2.identity_file == "/home/me/k"
    assert h2.user == "root"  # the default for a host-side step
    assert ref_of(h2) == HostRef("h2", "10.0.0.2", "root", "/home/me/k")


def test_an_unknown_key_in_a_host_is_named():
    _, problems = read_hosts([{"name": "h1", "uri": "qemu:///system", "adress": "x"}], "qemu:///system", False)
    assert any("unknown key(s) adress" in str(p) for p in problems), problems


@pytest.mark.skipif(not shutil.which("virsh"), reason="needs libvirt's client")
def test_the_probe_reads_a_host_and_names_one_that_does_not_answer():
    facts, why = probe(HostSpec("t", "test:///default"), HostRef("t"))
    assert facts is not None and facts.cpus > 0 and facts.memory_mib > 0 and why == ""
    gone = HostSpec("h9", "qemu+unix:///system?socket=/nonexistent/libvirt-sock")
    facts, why = probe(gone, HostRef("h9"))
    assert facts is None and "libvirt at qemu+unix:///system?socket=/nonexistent/libvirt-sock does not answer" in why
    message = unreachable_message({"h9": why}, (HostSpec("t", "test:///default"), gone))
    assert message.startswith("l2dsr:hosts: 1 of 2 host(s) cannot be used, so nothing was created on any host")
    assert "host h9 (qemu+unix:///system?socket=/nonexistent/libvirt-sock)" in message


def test_ssh_to_a_guest_on_a_remote_host_jumps_through_that_host(monkeypatch):
    monkeypatch.setattr("runtime.ssh.assert_in_lab_namespace", lambda: None)
    far = VmRef("web01", "web", "172.16.0.101", "l2dsr-x-web01", "/log", HostRef("h2", "10.0.0.2", "root", "/k"))
    near = VmRef("lb", "lb", "192.168.16.2", "l2dsr-x-lb", "/log")
    ssh = Ssh.to("lab", "/key", [far, near])
    jump = [a for a in ssh.argv("172.16.0.101", "true") if a.startswith("ProxyCommand=")]
    assert jump and "-W %h:%p root@10.0.0.2" in jump[0] and "-i /k" in jump[0]
    assert "%%C" in jump[0] and "%C" not in jump[0].replace(
        "%%C", ""
    )  # the outer ssh expands tokens: only %h:%p are its
    assert not [a for a in ssh.argv("192.168.16.2", "true") if a.startswith("ProxyCommand=")]


@pytest.fixture
def namespace():
    if not shutil.which("ip") or subprocess.run(["ip", "netns", "list"], capture_output=True).returncode != 0:
        pytest.skip("needs ip netns (root)")
    name = f"l2dsr-t-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def in_ns(ns: str, command: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", ns, "sh", "-c", command], capture_output=True, text=True, check=True
    ).stdout


def test_a_tunnel_end_is_made_read_and_removed_for_real(namespace):
    """The rendered commands on a real kernel (VXLAN is built into this host's): what they make reads
    back as no difference; a lost flood entry and a detached port are differences; remove leaves nothing."""
    in_ns(namespace, "ip link add br-t type bridge && ip link set br-t up")
    end = TunnelEnd("vx-t", 4242, "10.99.0.1", ("10.99.0.2", "10.99.0.3"), "br-t", "l2dsr:owner-1")
    in_ns(namespace, " && ".join(end.create_commands()))
    state = parse_state(in_ns(namespace, end.read_command()))
    assert state.exists and state.vni == 4242 and state.peers == ("10.99.0.2", "10.99.0.3")
    assert differences(end, state) == []
    in_ns(namespace, "bridge fdb del 00:00:00:00:00:00 dev vx-t dst 10.99.0.3 && ip link set vx-t nomaster")
    found = differences(end, parse_state(in_ns(namespace, end.read_command())))
    assert any("bridge is ''" in f for f in found) and any("peers is ('10.99.0.2',)" in f for f in found), found
    in_ns(namespace, end.delete_command())
    gone = parse_state(in_ns(namespace, end.read_command()))
    assert not gone.exists and differences(end, gone) == ["VXLAN interface vx-t is missing"]


def test_a_simulated_host_has_private_libvirt_state_and_an_sshd_on_the_underlay_only():
    from hypervisor import libvirt, simhosts

    host = simhosts.SimHost("h2", "l2dsr-h2", simhosts.address_of(2), "/var/lib/l2dsr/hosts/h2")
    launcher = simhosts._launcher(host)
    for key, path in libvirt.PRIVATE_DIRS.items():
        assert f"mount --bind /var/lib/l2dsr/hosts/h2/{key} {path}\n" in launcher
    assert launcher.index("mount --bind") < launcher.index("libvirtd")  # the daemons see only the private state
    # its empty resolver is bound inside its own mount namespace: no file of the lab's under /etc/netns
    assert (
        "mount --bind /var/lib/l2dsr/hosts/h2/resolv.conf /etc/resolv.conf" in launcher and "/etc/netns" not in launcher
    )
    sshd = simhosts._sshd_config(host)
    assert "ListenAddress 10.254.0.2\n" in sshd and "PasswordAuthentication no" in sshd
    assert host.uri.startswith("qemu+ssh://root@10.254.0.2/system?keyfile=")
    inventory = simhosts.inventory([host])
    assert [h["name"] for h in inventory] == ["h1", "h2"] and inventory[0]["uri"] == "qemu:///system"
    _, problems = read_hosts(inventory, "qemu:///system", False)
    assert problems == []  # what `hosts up` prints is a valid l2dsr:hosts


def test_multiplexed_ssh_opens_one_master_per_vm_and_ends_them(tmp_path, monkeypatch):
    """The benchmark's SSH: the first command to a VM opens its master (`-M -N -f`) once, however many
    threads ask at once; every command names the master's socket; the block's end sends `-O exit` to
    each master and removes the sockets' directory. (A stand-in `ssh` records its calls.)"""
    import threading

    calls = tmp_path / "calls"
    fake = tmp_path / "bin" / "ssh"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {calls}\n'
        'case " $* " in *" -M "*) for a; do case "$a" in ControlPath=*) : > "${a#ControlPath=}";; esac; done;; esac\n'
        "echo ok\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    monkeypatch.setattr("runtime.ssh.assert_in_lab_namespace", lambda: None)
    with Ssh("lab", "/key").multiplexed() as ssh:
        directory = Path(ssh.control_dir)
        threads = [threading.Thread(target=ssh.run, args=(a, "uptime")) for a in ["172.16.0.101", "172.16.0.102"] * 4]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(p.name for p in directory.iterdir()) == ["172.16.0.101", "172.16.0.102"]
    lines = calls.read_text().splitlines()
    masters = [line for line in lines if " -M -N -f " in f" {line} "]
    assert len(masters) == 2 and all(f"ControlPersist={Ssh.CONTROL_PERSIST_S}" in m for m in masters)
    commands = [line for line in lines if line.endswith(" uptime")]
    assert len(commands) == 8 and all("ControlMaster=no" in c and f"ControlPath={directory}/" in c for c in commands)
    exits = [line for line in lines if "-O exit" in line]
    assert len(exits) == 2 and not directory.exists()
    assert Ssh("lab", "/key").argv("172.16.0.101", "true")[:2] == ["ssh", "-i"]  # not multiplexed: as before
