"""Each libvirt host of the lab, asked at preview: does libvirt answer, what it has (CPUs, memory),
and for a remote host whether SSH reaches it (host-side steps and the jump to its guests need it).
An unreachable host stops the preview with its URI and the error, before anything is created."""

from __future__ import annotations

from lab.hostfit import HostFacts
from lab.spec import HostSpec
from runtime.hostshell import HostError, HostRef
from virt.virsh import Virsh, VirshError


def probe(host: HostSpec, ref: HostRef) -> tuple[HostFacts | None, str]:
    """(its CPUs and memory, "") or (None, why it cannot be used)."""
    try:
        cpus, memory_mib = Virsh(host.uri).node_facts(timeout=30)
    except VirshError as e:
        return None, f"libvirt at {host.uri} does not answer: {e}"
    if ref.remote:
        try:
            ref.run("true", timeout=30)
        except HostError as e:
            return None, f"SSH to it fails (host-side steps and the guests need it): {e}"
    return HostFacts(cpus, memory_mib), ""


def unreachable_message(failed: dict[str, str], hosts: tuple[HostSpec, ...]) -> str:
    uris = {h.name: h.uri for h in hosts}
    lines = [f"  - host {name} ({uris[name]}): {why}" for name, why in failed.items()]
    return (
        f"l2dsr:hosts: {len(failed)} of {len(hosts)} host(s) cannot be used, so nothing was created on any host:\n"
        + "\n".join(lines)
        + "\n  Start libvirtd there or fix the host's uri/address/user in l2dsr:hosts (simulated hosts: ./labctl hosts up)"
    )
