"""Removing only what is the lab's on a libvirt host: its objects read with their markers
(virt/ownership.py), the volumes of the domains removed, and the teardown of what setup started
(hypervisor/libvirt.py): the daemons by PID, the namespace, the private directory when it defines
nothing left."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from hypervisor.libvirt import POOL_NAME, SANDBOX_DIR, in_namespace, ours_running, stop, virsh_of
from hypervisor.progress import StepFailed, say
from runtime.hostfacts import RECORD, RUN_DIR, in_flight_dir, read_record
from virt import ownership
from virt.ownership import Marker
from virt.virsh import Virsh, VirshError

# ---- what is the lab's on a libvirt host, and removing only that ----------------------------------


@dataclass
class HostObjects:
    """A libvirt host's domains and networks with their markers, and which domains run."""

    domains: dict[str, Marker | None] = field(default_factory=dict)
    networks: dict[str, Marker | None] = field(default_factory=dict)
    running: set[str] = field(default_factory=set)
    xml: dict[str, str] = field(default_factory=dict)  # each domain's XML


def host_objects(virsh: Virsh) -> HostObjects:
    found = HostObjects()
    for name in virsh.names("list", "--all", "--name"):
        found.xml[name] = virsh.run("dumpxml", name, check=False)
        found.domains[name] = ownership.marker_of(found.xml[name])
    found.running = set(virsh.names("list", "--name"))
    for name in virsh.names("net-list", "--all", "--name"):
        found.networks[name] = ownership.marker_of(virsh.run("net-dumpxml", name, check=False))
    return found


def volumes_of(objects: HostObjects, removed: list[str], pool_volumes: dict[str, str]) -> list[str]:
    """The pool's volumes (name -> path) a clean-up removes with `removed` domains (pure): those their
    XML names, and the images of their stacks (`l2dsr-<stack>-...`), unless a domain that stays names
    one of them (its disk, kernel, initrd, or the base its disk is made on)."""
    kept_text = "\n".join(x for d, x in objects.xml.items() if d not in removed)
    gone_text = "\n".join(objects.xml[d] for d in removed if d in objects.xml)
    stacks = {m.stack for d in removed if (m := objects.domains.get(d)) and m.stack}
    # a stack of the same name that stays (another checkout's) may build on any of those images
    stacks -= {m.stack for d, m in objects.domains.items() if d not in removed and m}
    return [
        name
        for name, path in sorted(pool_volumes.items())
        if (path in gone_text or any(name.startswith(f"l2dsr-{s}-") for s in stacks)) and path not in kept_text
    ]


def forget_in_flight(removed: set[str]) -> None:
    """The providers' journal entries (resources/volume.py) of volumes a clean-up removed."""
    for entry in in_flight_dir().glob("*.json"):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            if json.loads(entry.read_text())["name"] in removed:
                entry.unlink()


def remove_ours(virsh: Virsh, is_ours, where: str = "libvirt", ip_prefix: list[str] | None = None) -> list[str]:
    """Remove the domains and networks (and their volumes) whose marker `is_ours` accepts, and, where
    `ip_prefix` runs `ip` (the lab's namespace), the VXLAN interfaces whose alias is one of their
    stacks' owner token; the rest is listed and left. Returns what was left, as `kind name (why)`."""
    objects = host_objects(virsh)
    owners = {m.owner for m in [*objects.domains.values(), *objects.networks.values()] if m and is_ours(m)}
    domains = ownership.sort_for_cleanup(objects.domains, is_ours, ownership.state_gone)
    networks = ownership.sort_for_cleanup(objects.networks, is_ours, ownership.state_gone)
    pool = {}
    if virsh.ok("pool-info", POOL_NAME):
        for name in virsh.names("vol-list", "--pool", POOL_NAME):
            pool[name] = virsh.run("vol-path", "--pool", POOL_NAME, name, check=False).strip()
    volumes = volumes_of(objects, domains.remove, pool)
    for d in domains.remove:
        with contextlib.suppress(VirshError):  # one that will not go is said below, with the rest left
            virsh.domain_remove(d)
            say(f"{where}: removed domain {d}")
    for v in volumes:
        virsh.run("vol-delete", "--pool", POOL_NAME, v, check=False)
    if volumes:
        say(f"{where}: removed {len(volumes)} volume(s) of those domains' stacks")
        forget_in_flight(set(volumes))
    for n in networks.remove:
        with contextlib.suppress(VirshError):
            virsh.network_remove(n)
            say(f"{where}: removed network {n}")
    if ip_prefix is not None and owners:
        links = subprocess.run([*ip_prefix, "ip", "-j", "link", "show"], capture_output=True, text=True).stdout
        for link in json.loads(links or "[]"):
            if link.get("ifalias") in owners:
                subprocess.run([*ip_prefix, "ip", "link", "del", link["ifname"]], capture_output=True)
                say(f"{where}: removed interface {link['ifname']}")
    left = [f"domain {d}" for d in domains.left] + [f"network {n}" for n in networks.left]
    for what in left:
        say(f"{where}: left alone: {what}")
    return left


def teardown(force: bool = False, states: tuple[str, ...] = (), record: Path = RECORD, orphans: bool = False) -> None:
    """Stop exactly what setup started, and remove only the lab's objects: with `force`, those whose
    marker says they belong to one of `states` (this checkout's Pulumi state, or the test run's);
    never the user's or another checkout's, which are listed and left (the daemon stays up while one
    of them runs). Without `force`, refused while a domain of `states` is still defined. (`record`:
    another sandbox's, for the tests that try it for real.)"""
    rec = read_record(record)
    if rec is None:
        say("libvirt host: nothing of ours to tear down")
        return
    if rec.libvirtd == "sandbox" and ours_running(rec):
        virsh = virsh_of(rec)
        objects = host_objects(virsh)
        ours = ownership.of_state_or_orphan(*states) if orphans else ownership.of_state(*states)
        if not force:
            defined = ownership.sort_for_cleanup(objects.domains, ours).remove
            if defined:
                raise StepFailed(
                    f"domains of this checkout's stacks are still defined: {' '.join(defined)}; "
                    "run ./labctl destroy STACK first (or ./labctl down --force)"
                )
        else:
            remove_ours(virsh, ours, "libvirt", ip_prefix=in_namespace(rec))
            objects = host_objects(virsh)
        others_running = sorted(objects.running)
        if others_running:
            say(
                f"libvirt: domains that are not this checkout's still run ({' '.join(others_running)}): "
                "the private libvirtd stays up; stop them (./labctl sh virsh destroy NAME), then ./labctl down"
            )
            return
        if rec.created_pool and not objects.domains and not objects.networks:
            virsh.run("pool-destroy", POOL_NAME, check=False)
            virsh.run("pool-undefine", POOL_NAME, check=False)
        keep_state = bool(objects.domains or objects.networks)
    else:  # not running (its daemon crashed): what it defines cannot be read by marker, so it all stays
        keep_state = bool(rec.directory and defined_in(Path(rec.directory)))
    for name, pid in rec.pids.items():
        if stop(pid):
            say(f"stopped {name} (pid {pid})")
    if rec.namespace:
        subprocess.run(["ip", "netns", "delete", rec.namespace], capture_output=True)
        say(f"deleted network namespace {rec.namespace}")
    if rec.directory:
        if keep_state:
            say(
                f"kept {rec.directory}: it defines objects that are not removed (the next ./labctl setup sees them; "
                "./labctl down --force then removes this checkout's)"
            )
        else:
            shutil.rmtree(rec.directory, ignore_errors=True)
            _remove_empty_parents()
    for directory in rec.created_dirs:
        with contextlib.suppress(OSError):
            Path(directory).rmdir()  # a mount point setup made, if nothing else put anything there
    record.unlink(missing_ok=True)
    if record == RECORD:
        for probe in RUN_DIR.glob("kvm-probe-*.json"):
            probe.unlink()
        _remove_empty_parents()


def defined_in(directory: Path) -> list[str]:
    """The domains and networks a private libvirt directory defines, and the volumes of its pool."""
    etc, images = directory / "etc" / "qemu", directory / "lib" / "images"
    found = [*etc.glob("*.xml"), *(etc / "networks").glob("*.xml")]
    found += list(images.iterdir()) if images.is_dir() else []
    return sorted(p.name for p in found)


def _remove_empty_parents() -> None:
    """rmdir the lab's own directories (/run/l2dsr, /var/lib/l2dsr) once nothing is left in them."""
    for directory in (RUN_DIR, SANDBOX_DIR.parent):
        with contextlib.suppress(OSError):
            directory.rmdir()
