"""The lab's L2 segment across hosts: on each host a VXLAN interface on the lab's bridge, with
head-end replication to every other host by static FDB entries (no multicast on the underlay).

Pure: the commands that make, read and remove one host's end, and the reading of its state. The
resource that runs them on each host is resources/tunnel.py. The guests' MTU is SEGMENT_MTU on a
segment that spans hosts, so an encapsulated frame (50 bytes of VXLAN/UDP/IP/Ethernet) fits an
underlay of 1500: nothing is asked of the network between the hosts but UDP 4789.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass

VXLAN_PORT = 4789  # IANA's; what a firewall between the hosts must let through (UDP)
VXLAN_OVERHEAD = 50
UNDERLAY_MTU = 1500
SEGMENT_MTU = UNDERLAY_MTU - VXLAN_OVERHEAD
FLOOD = "00:00:00:00:00:00"  # the FDB entry a VXLAN interface sends unknown and broadcast frames to


def stack_vni(project: str, stack: str) -> int:
    """A VNI per stack (1..16777215), so two stacks' segments never mix on a shared underlay."""
    return int(hashlib.sha256(f"{project}/{stack}".encode()).hexdigest()[:6], 16) % 0xFFFFFE + 1


def interface_name(stack: str) -> str:
    return f"l2vx-{hashlib.sha256(stack.encode()).hexdigest()[:8]}"  # 13 characters (at most 15)


@dataclass(frozen=True)
class TunnelEnd:
    """One host's end: its VXLAN interface on the lab's bridge, flooding to the other hosts."""

    name: str  # the VXLAN interface
    vni: int
    local: str  # this host's underlay address
    peers: tuple[str, ...]  # the other hosts' underlay addresses
    bridge: str  # the lab network's bridge on this host
    marker: str  # the interface's alias: whose it is (the stack's owner token)
    mtu: int = SEGMENT_MTU

    def create_commands(self) -> list[str]:
        n = shlex.quote(self.name)
        return [
            f"ip link add {n} type vxlan id {self.vni} dstport {VXLAN_PORT} local {self.local} ttl 64",
            f"ip link set {n} alias {shlex.quote(self.marker)} mtu {self.mtu} master {shlex.quote(self.bridge)} up",
            *(f"bridge fdb append {FLOOD} dev {n} dst {peer}" for peer in self.peers),
        ]

    def read_command(self) -> str:
        n = shlex.quote(self.name)
        return f"ip -d -j link show dev {n} 2>/dev/null || echo '[]'; echo '#'; bridge -j fdb show dev {n} 2>/dev/null || echo '[]'"

    def delete_command(self) -> str:
        return f"ip link del {shlex.quote(self.name)}"


@dataclass(frozen=True)
class TunnelState:
    exists: bool
    marker: str = ""
    vni: int = 0
    local: str = ""
    bridge: str = ""
    up: bool = False
    peers: tuple[str, ...] = ()
    mtu: int = 0


def parse_state(text: str) -> TunnelState:
    """What `read_command` printed: the interface (ip -d -j link) and its flood entries (bridge -j fdb)."""
    link_json, _, fdb_json = text.partition("#")
    links = json.loads(link_json.strip() or "[]")
    if not links:
        return TunnelState(False)
    link = links[0]
    data = (link.get("linkinfo") or {}).get("info_data") or {}
    fdb = json.loads(fdb_json.strip() or "[]")
    return TunnelState(
        exists=True,
        marker=link.get("ifalias", ""),
        vni=int(data.get("id", 0)),
        local=data.get("local", ""),
        bridge=link.get("master", ""),
        up="UP" in link.get("flags", []),
        peers=tuple(sorted(e["dst"] for e in fdb if e.get("mac") == FLOOD and "dst" in e)),
        mtu=int(link.get("mtu", 0)),
    )


def differences(end: TunnelEnd, state: TunnelState) -> list[str]:
    """How the host's end differs from what it should be (empty: as made)."""
    if not state.exists:
        return [f"VXLAN interface {end.name} is missing"]
    wanted = {
        "owner": (state.marker, end.marker),
        "VNI": (state.vni, end.vni),
        "local address": (state.local, end.local),
        "bridge": (state.bridge, end.bridge),
        "up": (state.up, True),
        "peers": (state.peers, tuple(sorted(end.peers))),
        "MTU": (state.mtu, end.mtu),
    }
    return [f"{end.name}'s {what} is {have!r}, not {want!r}" for what, (have, want) in wanted.items() if have != want]
