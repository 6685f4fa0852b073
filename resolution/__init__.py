"""The one resolution of a configuration into a lab, pure: the program (`__main__.py`), the config
cases (tests/test_cases.py) and the benchmark scripts take it from here, so none of them can check
less, or in another order, than the others.

Two steps, because what lies between them is not pure (asking each libvirt host what it has):
- `configure(values)`: the spec and its mode (lbmodes.load_lab), the address plan, what the
  placement names (hosts and VMs that exist), and what the caller adds of its own (the program: the
  hosts' identity files); every problem at once.
- `resolve(configured, facts, domain_type)`: every VM placed on a host, each host's fit, the lab's
  subnets against each host's own networks, the benchmark's cost; every problem at once, with the
  warnings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bench.cost import Cost, cost_problems
from lab.addressing import AddressPlan, host_network_clashes, plan
from lab.hostfit import HostFacts
from lab.placement import Placement, place, placement_fit, placement_problems
from lab.spec import ConfigError, HostSpec, LabSpec, Problem
from lbmodes import Mode, load_lab

__all__ = ["Configured", "Lab", "configure", "resolve"]


@dataclass(frozen=True)
class Configured:
    """What the configuration alone says: the spec, its mode (the object), the address plan."""

    spec: LabSpec
    mode: Mode
    plan: AddressPlan


@dataclass(frozen=True)
class Lab(Configured):
    """A lab that can be built on its hosts: where each VM runs, how, and what its benchmark costs."""

    domain_type: str  # kvm | qemu, decided
    placement: Placement
    cost: Cost
    warnings: tuple[str, ...] = ()


def configure(
    values: Mapping[str, object] | None = None,
    more: Callable[[tuple[HostSpec, ...]], list[Problem]] = lambda hosts: [],
) -> Configured:
    """The configuration, or ConfigError with every problem; `more(hosts)` adds the caller's own."""
    spec, mode = load_lab(values)
    p = plan(spec)
    problems = placement_problems(spec, p) + more(spec.hosts)
    if problems:
        raise ConfigError(problems)
    return Configured(spec, mode, p)


def resolve(
    configured: Configured,
    facts: Mapping[str, HostFacts | None],
    domain_type: str,
    own_devices: frozenset[str] = frozenset(),
) -> Lab:
    """The lab on its hosts (`facts`: what each says it has; `own_devices`: the lab's own bridge and
    tunnel, which a host's networks may already hold), or ConfigError with every problem and the
    warnings."""
    spec, mode, p = configured.spec, configured.mode, configured.plan
    placement = place(spec, p, facts, domain_type)
    problems, warnings = placement_fit(spec, p, placement, facts, domain_type)
    for name, found in facts.items():
        if found is not None:
            problems += host_network_clashes(p, name, found.addresses, found.routes, own_devices)
    cost, too_long = cost_problems(spec, mode, domain_type)
    problems += too_long
    if problems:
        raise ConfigError(problems, warnings)
    return Lab(spec, mode, p, domain_type, placement, cost, tuple(warnings))
