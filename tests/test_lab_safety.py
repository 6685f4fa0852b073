"""The clean-up, tried for real on a libvirtd of its own: a second private libvirtd (as ./labctl setup
starts the lab's) holding a domain and a network of "the user's", one of another checkout's and one
of this state's. `down --force`'s teardown removes only the last, stops the daemons, edits no file of
the host's /etc, and the user's objects are there again when the daemon comes back. Seconds; no guest
is booted."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from hypervisor import cleanup, libvirt
from runtime.hostfacts import HostRecord, write_record
from virt import ownership

pytestmark = pytest.mark.lab


def host_etc() -> Path:
    """The host's own /etc, seen from inside the lab's mount namespace: through the root of the nearest
    ancestor process outside it (./labctl's, which started the tests)."""
    ours = os.readlink("/proc/self/ns/mnt")
    pid = os.getppid()
    while pid > 1:
        if os.readlink(f"/proc/{pid}/ns/mnt") != ours:
            return Path(f"/proc/{pid}/root/etc")
        pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    return Path("/etc")


HOST_ETC = host_etc()
OURS = "file:///tmp/l2dsr-safety-test/backend"


def tree_digest(root: Path) -> dict[str, str]:
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def domain(name: str, marker: ownership.Marker | None) -> str:
    xml = f"<domain type='qemu'>\n  <name>{name}</name>\n  <memory unit='MiB'>64</memory>\n  <os><type>hvm</type></os>\n</domain>\n"
    return ownership.with_marker(xml, marker) if marker else xml


def network(name: str, bridge: str, marker: ownership.Marker | None) -> str:
    xml = f"<network>\n  <name>{name}</name>\n  <bridge name='{bridge}'/>\n</network>\n"
    return ownership.with_marker(xml, marker) if marker else xml


@pytest.fixture
def sandbox(tmp_path):
    name = f"l2dsr-t{os.getpid() % 100000}"
    directory = Path("/var/lib/l2dsr") / f"safety-{os.getpid()}"
    record = tmp_path / "host.json"
    rec = HostRecord(libvirtd="sandbox", namespace=name, directory=str(directory))
    write_record(rec, record)
    try:
        yield record, lambda: libvirt.start_private_libvirtd(rec, on_started=lambda r: write_record(r, record))
    finally:
        for pid in rec.pids.values():
            libvirt.stop(pid)
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)
        shutil.rmtree(directory, ignore_errors=True)


def test_down_force_removes_only_the_labs_objects_and_leaves_the_host_as_found(sandbox, tmp_path):
    record, start = sandbox
    etc_before = {d: tree_digest(HOST_ETC / d) for d in ("libvirt", "netns")}
    rec = start()
    virsh = libvirt.virsh_of(rec)
    ours = ownership.Marker("l2dsr/safety/1", OURS)
    other_checkout = tmp_path / "other-checkout" / ".state" / "backend"
    other_checkout.mkdir(parents=True)
    theirs = ownership.Marker("l2dsr/safety/2", f"file://{other_checkout}")
    # a CI run's, killed before its clean-up: its checkout (and state) is no longer on this machine
    gone = ownership.Marker("l2dsr/gone/3", "file:///nonexistent-l2dsr-ci/work/main/.state/test-runs/t0")
    for xml in (
        domain("users-vm", None),
        domain("l2dsr-safety-web01", ours),
        domain("l2dsr-other-web01", theirs),
        domain("l2dsr-gone-web01", gone),
    ):
        virsh.with_xml("define", xml)
    for xml in (network("users-net", "usr-br0", None), network("l2dsr-safety", "l2dsr-sft", ours)):
        virsh.with_xml("net-define", xml)
    assert not (HOST_ETC / "libvirt" / "qemu" / "users-vm.xml").exists()  # defined in the private state only

    # a VXLAN end of ours and one of another stack's, as virt/tunnel.py marks them (alias: the owner)
    ns = ["ip", "netns", "exec", rec.namespace]
    for link, alias in (("l2vx-ours", ours.owner), ("l2vx-theirs", theirs.owner)):
        subprocess.run([*ns, "ip", "link", "add", link, "type", "bridge"], check=True)  # no dummy driver here
        subprocess.run([*ns, "ip", "link", "set", link, "alias", alias], check=True)

    with pytest.raises(libvirt.StepFailed, match="l2dsr-safety-web01"):
        cleanup.teardown(force=False, states=(OURS,), record=record)  # plain down: refused, nothing removed
    assert "l2dsr-safety-web01" in virsh.names("list", "--all", "--name")

    # what the test command's clean-up does while the daemon stays up, and teardown first of all
    left = cleanup.remove_ours(virsh, ownership.of_state(OURS), "test", ip_prefix=ns)
    assert sorted(left) == sorted(
        [
            "domain users-vm (no l2dsr marker: not the lab's)",
            f"domain l2dsr-other-web01 (stack safety of another state: file://{other_checkout})",
            "domain l2dsr-gone-web01 (stack gone of a state that no longer exists here: "
            "file:///nonexistent-l2dsr-ci/work/main/.state/test-runs/t0; ./labctl down --force --orphans removes it)",
            "network users-net (no l2dsr marker: not the lab's)",
        ]
    )
    links = subprocess.run([*ns, "ip", "-br", "link"], capture_output=True, text=True).stdout
    assert "l2vx-theirs" in links and "l2vx-ours" not in links
    cleanup.teardown(force=True, states=(OURS,), record=record)
    assert not any(libvirt.alive(p) for p in rec.pids.values())  # nothing runs: the daemons stopped
    assert subprocess.run(["ip", "netns", "pids", rec.namespace], capture_output=True).returncode != 0
    assert {d: tree_digest(HOST_ETC / d) for d in ("libvirt", "netns")} == etc_before  # no host file touched
    assert not record.exists()

    rec = start()  # the next setup: the user's and the other checkout's are all there, ours is not
    virsh = libvirt.virsh_of(rec)
    assert sorted(virsh.names("list", "--all", "--name")) == ["l2dsr-gone-web01", "l2dsr-other-web01", "users-vm"]
    assert virsh.names("net-list", "--all", "--name") == ["users-net"]
    cleanup.teardown(force=True, states=(), record=record)  # no state of its own: removes nothing
    rec = start()
    assert sorted(libvirt.virsh_of(rec).names("list", "--all", "--name")) == [
        "l2dsr-gone-web01",
        "l2dsr-other-web01",
        "users-vm",
    ]
    cleanup.teardown(force=True, states=(), record=record, orphans=True)  # down --force --orphans
    rec = start()
    assert sorted(libvirt.virsh_of(rec).names("list", "--all", "--name")) == ["l2dsr-other-web01", "users-vm"]
