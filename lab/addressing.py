"""The address plan: which VM gets which address, derived from the spec alone.

One L2 segment carries both subnets, as in a classic L2DSR set-up: the LB and the webs share it, so
the LB forwards a request by rewriting only the destination MAC, and a web's reply (source = VIP)
goes straight to the client's MAC without crossing the LB or the host. The host holds `.1` in both
subnets for management (SSH) only; it routes nothing.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from lab.spec import LabSpec, Problem

GATEWAY_OFFSET = 1  # the host's address in each subnet
LB_OFFSET = 2  # the LB's address in each subnet
FIRST_CLIENT_OFFSET = 11  # client01 in the front subnet


def host_offset(index: int) -> int:
    """A libvirt host's own address in each subnet, as an offset: the first host holds .1 as a single
    host does, the others .3, .4, ... (.2 is the LB): SSH to a host's guests starts there."""
    return GATEWAY_OFFSET if index == 0 else LB_OFFSET + index


@dataclass(frozen=True)
class Guest:
    name: str  # role-level name: client01, lb, web01 (the domain name adds the stack)
    role: str  # client | lb | web
    address: ipaddress.IPv4Address  # primary address, used for SSH
    extra: tuple[ipaddress.IPv4Interface, ...] = ()  # further addresses on eth0


@dataclass(frozen=True)
class AddressPlan:
    front: ipaddress.IPv4Network
    server: ipaddress.IPv4Network
    vip: ipaddress.IPv4Address
    host_front: ipaddress.IPv4Address
    host_server: ipaddress.IPv4Address
    lb: Guest
    clients: tuple[Guest, ...]
    webs: tuple[Guest, ...]

    @property
    def guests(self) -> tuple[Guest, ...]:
        return (*self.clients, self.lb, *self.webs)

    def host_addresses(self, index: int) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
        """The `index`th host's (front, server) addresses on the segment."""
        return _nth(self.front, host_offset(index)), _nth(self.server, host_offset(index))

    @property
    def lb_server_address(self) -> ipaddress.IPv4Address:
        """The LB's address in the server subnet: the webs' next hop when replies go through the LB."""
        return next(i.ip for i in self.lb.extra if i.ip in self.server)


# ---- names: every name the lab gives a VM, here ----------------------------------------------------


def domain_name(stack: str, guest: Guest) -> str:
    """The libvirt domain (and the stem of its volumes): the stack in it, so two stacks never collide."""
    return f"l2dsr-{stack}-{guest.name}"


def mac_address(guest: Guest) -> str:
    """A stable MAC from the primary address (52:54:00 is QEMU's prefix): replacements keep it."""
    a, b, c, d = guest.address.packed
    return f"52:54:00:{b ^ a:02x}:{c:02x}:{d:02x}"


def _nth(net: ipaddress.IPv4Network, offset: int) -> ipaddress.IPv4Address:
    return net.network_address + offset


def plan(spec: LabSpec) -> AddressPlan:
    front, server = spec.front_subnet, spec.server_subnet
    lb = Guest(
        "lb",
        "lb",
        _nth(front, LB_OFFSET),
        extra=(
            ipaddress.IPv4Interface(f"{_nth(server, LB_OFFSET)}/{server.prefixlen}"),
            ipaddress.IPv4Interface(f"{spec.vip}/32"),
        ),
    )
    clients = tuple(
        Guest(f"client{i + 1:02d}", "client", _nth(front, FIRST_CLIENT_OFFSET + i)) for i in range(spec.client_count)
    )
    webs = tuple(Guest(web_name(i), "web", spec.first_web_address + i) for i in range(spec.web_count))
    return AddressPlan(
        front, server, spec.vip, _nth(front, GATEWAY_OFFSET), _nth(server, GATEWAY_OFFSET), lb, clients, webs
    )


def web_name(index: int) -> str:
    """The name of the web at `index` (0-based): web01, web02, ..."""
    return f"web{index + 1:02d}"


def plan_problems(spec: LabSpec) -> list[Problem]:
    """What makes the plan impossible, each naming the key to change."""
    problems: list[Problem] = []
    front, server = spec.front_subnet, spec.server_subnet
    if front.overlaps(server):
        problems.append(Problem("serverSubnet", f"{server} overlaps frontSubnet {front}; use two disjoint subnets"))
        return problems
    for key, net in (("frontSubnet", front), ("serverSubnet", server)):
        if net.prefixlen > 29:
            problems.append(Problem(key, f"{net} is too small; use a /29 or larger"))
    if problems:
        return problems

    last_front = front.broadcast_address - 1
    first_client = _nth(front, FIRST_CLIENT_OFFSET)
    last_client = first_client + spec.client_count - 1
    if last_client > last_front:
        room = max(0, int(last_front) - int(first_client) + 1)
        problems.append(
            Problem(
                "clientCount",
                f"{spec.client_count} clients from {first_client} do not fit in {front} "
                f"(room for {room}); lower clientCount or use a larger frontSubnet",
            )
        )

    if spec.vip not in front:
        problems.append(Problem("vip", f"{spec.vip} is outside frontSubnet {front}; pick an address inside it"))
    elif spec.vip in (front.network_address, front.broadcast_address):
        problems.append(
            Problem("vip", f"{spec.vip} is the network or broadcast address of {front}; pick a host address")
        )
    else:
        taken = {_nth(front, GATEWAY_OFFSET): "the host", _nth(front, LB_OFFSET): "the LB"}
        taken.update({_nth(front, host_offset(i)): f"host {h.name}" for i, h in enumerate(spec.hosts) if i})
        if first_client <= spec.vip <= last_client:
            taken[spec.vip] = f"client{int(spec.vip) - int(first_client) + 1:02d}"
        if spec.vip in taken:
            problems.append(
                Problem(
                    "vip",
                    f"{spec.vip} collides with {taken[spec.vip]}'s address; pick an address other than "
                    f"{front.network_address + GATEWAY_OFFSET}, {front.network_address + LB_OFFSET} and "
                    f"{first_client}-{last_client}",
                )
            )

    first_web = spec.first_web_address
    if first_web not in server:
        problems.append(
            Problem("firstWebAddress", f"{first_web} is outside serverSubnet {server}; pick an address inside it")
        )
    elif first_web <= _nth(server, host_offset(len(spec.hosts) - 1) if len(spec.hosts) > 1 else LB_OFFSET):
        last = host_offset(len(spec.hosts) - 1) if len(spec.hosts) > 1 else LB_OFFSET
        hosts = f"the hosts (.{GATEWAY_OFFSET}, .{LB_OFFSET + 1}-.{last})" if len(spec.hosts) > 1 else "the host"
        problems.append(
            Problem(
                "firstWebAddress",
                f"{first_web} collides with {hosts} or the LB (.{LB_OFFSET}) in {server}; start at .{last + 1} or later",
            )
        )
    else:
        last_server = server.broadcast_address - 1
        room = int(last_server) - int(first_web) + 1
        if spec.web_count > room:
            problems.append(
                Problem(
                    "webCount",
                    f"{spec.web_count} web servers from {first_web} do not fit in {server} "
                    f"(room for {room}); lower webCount, start firstWebAddress earlier or use a larger serverSubnet",
                )
            )
    return problems


def host_network_clashes(
    plan: AddressPlan,
    host: str,
    addresses: tuple[tuple[str, str], ...],
    routes: tuple[tuple[str, str], ...],
    own_devices: frozenset[str],
) -> list[Problem]:
    """The lab's subnets against a host's own addresses and routes (pure): with a system libvirtd the
    lab's bridge and its addresses land in the host's namespace, where an overlap would cut the host
    off from a network it uses. Devices of the lab's own (its bridge, its VXLAN end) do not count."""
    subnets = (
        ("frontSubnet", plan.front, "l2dsr:frontSubnet and l2dsr:vip"),
        ("serverSubnet", plan.server, "l2dsr:serverSubnet and l2dsr:firstWebAddress"),
    )
    found = []
    for kind, pairs in (("address", addresses), ("route", routes)):
        for dev, prefix in pairs:
            if dev in own_devices or prefix in ("default", ""):
                continue
            try:
                theirs = ipaddress.IPv4Interface(prefix).network
            except ValueError:
                continue
            for key, ours, keys in subnets:
                if ours.overlaps(theirs):
                    found.append(
                        Problem(
                            key,
                            f"{ours} overlaps the {kind} {prefix} on host {host}'s {dev}: the lab's bridge would take "
                            f"it over; give {keys} a subnet the host does not use",
                        )
                    )
    return found
