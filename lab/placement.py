"""Which host each VM runs on: `l2dsr:placement` where it says, the rest placed here. Pure.

With one host everything is on it. With several, the LB gets a host of its own (the first, unless
placed), so its NIC and CPUs are what the benchmark measures; the other VMs, largest first, go to
the host with the most memory left, then the most vCPUs left (inventory order breaks ties). A VM or
role placed by name stays where it is placed, even on the LB's host. Each host is then checked as a
single host is (lab/hostfit.py), against what is placed on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from lab.addressing import AddressPlan, Guest
from lab.hostfit import QEMU_OVERHEAD_MIB, HostFacts, host_fit
from lab.spec import PROJECT, ROLES, LabSpec, Problem


@dataclass(frozen=True)
class Placement:
    hosts: tuple[str, ...]  # inventory order
    of: dict[str, str]  # guest name -> host name

    def guests_on(self, host: str, plan: AddressPlan) -> tuple[Guest, ...]:
        return tuple(g for g in plan.guests if self.of[g.name] == host)

    def table(self, plan: AddressPlan) -> str:
        """VM, role, host: what `./labctl up` prints and the `placement` stack output lists."""
        width = max(len(g.name) for g in plan.guests)
        rows = [f"{'VM':<{width}}  {'role':<6}  host"]
        rows += [f"{g.name:<{width}}  {g.role:<6}  {self.of[g.name]}" for g in plan.guests]
        return "\n".join(rows)


def placement_problems(spec: LabSpec, plan: AddressPlan) -> list[Problem]:
    """Placement keys that name no role or VM, and hosts that are not in the inventory."""
    problems: list[Problem] = []
    names = {h.name for h in spec.hosts}
    vms = {g.name for g in plan.guests}
    for key, host in sorted(spec.placement.items()):
        if key not in ROLES and key not in vms:
            problems.append(
                Problem(
                    "placement",
                    f"{key!r} is neither a role ({', '.join(ROLES)}) nor a VM of this lab "
                    f"({plan.guests[0].name} ... {plan.guests[-1].name}); place a role or a VM",
                )
            )
        if host not in names:
            problems.append(
                Problem(
                    "placement",
                    f"{key}: {host!r} is not a host of {PROJECT}:hosts ({', '.join(sorted(names))}); name one of them",
                )
            )
    return problems


def place(spec: LabSpec, plan: AddressPlan, facts: Mapping[str, HostFacts | None], domain_type: str) -> Placement:
    """Every guest on a host. Hosts whose facts are unknown count as empty (they are refused before this)."""
    order = tuple(h.name for h in spec.hosts)
    if len(order) == 1:
        return Placement(order, {g.name: order[0] for g in plan.guests})
    overhead = QEMU_OVERHEAD_MIB.get(domain_type, QEMU_OVERHEAD_MIB["qemu"])
    need = {g.name: spec.memory_mib[g.role] + overhead for g in plan.guests}
    free_mem = {h: (facts.get(h) or HostFacts(0, 0)).memory_mib for h in order}
    free_cpu = {h: (facts.get(h) or HostFacts(0, 0)).cpus for h in order}
    of: dict[str, str] = {}

    def put(guest: Guest, host: str) -> None:
        of[guest.name] = host
        free_mem[host] -= need[guest.name]
        free_cpu[host] -= spec.vcpus[guest.role]

    for g in plan.guests:
        chosen = spec.placement.get(g.name) or spec.placement.get(g.role)
        if chosen in free_mem:
            put(g, chosen)
    lb_host = of.setdefault(plan.lb.name, order[0])
    if plan.lb.name not in spec.placement and "lb" not in spec.placement:
        put(plan.lb, lb_host)
    others = [h for h in order if h != lb_host]
    rest = sorted((g for g in plan.guests if g.name not in of), key=lambda g: -need[g.name])
    for g in rest:
        put(g, max(others, key=lambda h: (free_mem[h], free_cpu[h], -order.index(h))))
    return Placement(order, of)


def placement_fit(
    spec: LabSpec, plan: AddressPlan, placement: Placement, facts: Mapping[str, HostFacts | None], domain_type: str
) -> tuple[list[Problem], list[str]]:
    """Each host against what is placed on it; with one host, exactly the single-host check."""
    if len(placement.hosts) == 1:
        return host_fit(spec, domain_type, facts.get(placement.hosts[0]))
    problems: list[Problem] = []
    warnings: list[str] = []
    for host in placement.hosts:
        on = placement.guests_on(host, plan)
        counts = {role: sum(g.role == role for g in on) for role in ROLES}
        p, w = host_fit(spec, domain_type, facts.get(host), counts, host)
        problems += p
        warnings += w
    return problems, warnings
