"""Each libvirt host of the lab, asked at preview: does libvirt answer, what it has (CPUs, memory),
and for a remote host whether SSH reaches it (host-side steps and the jump to its guests need it).
An unreachable host stops the preview with its URI and the error, before anything is created."""

from __future__ import annotations

import json

from lab.hostfit import HostFacts
from lab.spec import HostSpec
from runtime.hostfacts import read_record
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
    addresses: tuple[tuple[str, str], ...] = ()
    routes: tuple[tuple[str, str], ...] = ()
    rec = read_record()
    if ref.remote or not (rec and rec.namespace):  # the lab's bridge would be in the host's own namespace
        try:
            addresses, routes = parse_ip_json(ref.run(IP_JSON, timeout=30).stdout)
        except HostError as e:
            return None, f"cannot read its addresses and routes ({e})"
    return HostFacts(cpus, memory_mib, addresses, routes), ""


IP_JSON = "ip -j -4 addr show; echo @routes; ip -j -4 route show"


def parse_ip_json(text: str) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]:
    """`ip -j -4 addr` and `ip -j -4 route` (IP_JSON's output) as (device, prefix) pairs."""
    addr_text, _, route_text = text.partition("@routes")
    addresses = tuple(
        (link.get("ifname", ""), f"{a['local']}/{a.get('prefixlen', 32)}")
        for link in json.loads(addr_text or "[]")
        for a in link.get("addr_info", [])
        if a.get("local")
    )
    routes = tuple(
        (r.get("dev", ""), r["dst"] if "/" in r["dst"] or r["dst"] == "default" else f"{r['dst']}/32")
        for r in json.loads(route_text.strip() or "[]")
        if r.get("dst")
    )
    return addresses, routes


def unreachable_message(failed: dict[str, str], hosts: tuple[HostSpec, ...]) -> str:
    uris = {h.name: h.uri for h in hosts}
    lines = [f"  - host {name} ({uris[name]}): {why}" for name, why in failed.items()]
    return (
        f"l2dsr:hosts: {len(failed)} of {len(hosts)} host(s) cannot be used, so nothing was created on any host:\n"
        + "\n".join(lines)
        + "\n  Start libvirtd there or fix the host's uri/address/user in l2dsr:hosts (simulated hosts: ./labctl hosts up)"
    )
