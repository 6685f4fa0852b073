"""The benchmark's spec: everything a run needs, resolved from the lab (its spec, its mode, its
address plan and its VMs) before anything runs. Pure: the runner (bench/runner.py) and the fault
run (bench/faultrun.py) take it; the Benchmark component (components/benchmark.py) hands it to its
resource as that resource's inputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import loadtools
from lab.addressing import AddressPlan, mac_address
from lab.files import Retune
from lab.spec import Fault, LabSpec, SearchSpec
from lbmodes import Mode, ShareRule
from runtime.vm import VmRef

__all__ = ["BenchSpec", "ConfiguredLab", "FaultPlan", "bench_spec", "fault_plan"]


@dataclass(frozen=True)
class FaultPlan:
    """The fault run, resolved by the program: its fault, and how the mode's LB shows its rotation."""

    fault: Fault  # l2dsr:benchFault: what happens to which web, and when
    seconds: int
    concurrency: int
    checker: str  # what takes a dead web out: "HAProxy check", "keepalived", "none (static rules)"
    rotation: str  # the mode's command on the LB (lbmodes: Mode.rotation)
    keys: dict[str, str]  # what that command prints for a web (address or name) -> the web's name
    uri: str  # the web's libvirt host, for kill-web


@dataclass(frozen=True)
class BenchSpec:
    """Everything a benchmark run needs, resolved by the program (components/benchmark.py)."""

    stack: str
    mode: str  # the mode's name, for the records
    vip: str
    lb_mac: str
    lb: VmRef
    clients: tuple[VmRef, ...]
    webs: tuple[VmRef, ...]
    tool: str  # a name in loadtools.TOOLS
    keepalive: bool  # l2dsr:benchKeepAlive
    scheme: str  # http | https
    concurrency: tuple[int, ...]  # per step, summed over the clients
    requests: tuple[int, ...]
    repeats: int
    file_size_bytes: int
    # From the mode (lbmodes/): the LB thread count of each matrix row, what the LB was deployed
    # with, how to change it between rows (by thread count; empty when nothing can change), and
    # the bounds of the response bytes that may cross the LB.
    lb_steps: tuple[int, ...]
    lb_threads: int
    retunes: dict[str, Retune]
    shares: ShareRule
    balances: str  # what the mode's scheduler spreads over the webs: "connections" or "requests"
    fault: FaultPlan | None = None  # l2dsr:benchFault: a fault run after the steps
    search: SearchSpec | None = None  # l2dsr:benchSearch: a capacity search after them (bench/searchrun.py)
    search_start_rps: float = 0.0  # its first rate when benchSearchStartRps is 0: the preview's estimate

    @property
    def url(self) -> str:
        return loadtools.url(self.scheme, self.vip)

    @property
    def vms(self) -> list[VmRef]:
        return [*self.clients, self.lb, *self.webs]


class ConfiguredLab(Protocol):
    """The part of the resolved lab (resolution.Configured, or its Lab) the benchmark is built from."""

    @property
    def spec(self) -> LabSpec: ...
    @property
    def mode(self) -> Mode: ...
    @property
    def plan(self) -> AddressPlan: ...


def fault_plan(lab: ConfiguredLab, uris: dict[str, str] | None = None) -> FaultPlan | None:
    """l2dsr:benchFault with what the mode says of its rotation; None without a fault."""
    spec, mode, plan = lab.spec, lab.mode, lab.plan
    fault = spec.bench_fault
    if fault is None:
        return None
    checker, rotation = mode.rotation(spec)
    return FaultPlan(
        fault=fault,
        seconds=spec.bench_fault_seconds,
        concurrency=spec.bench_concurrency[0],
        checker=checker,
        rotation=rotation,
        keys={**{str(w.address): w.name for w in plan.webs}, **{w.name: w.name for w in plan.webs}},
        uri=(uris or {}).get(fault.web, spec.hosts[0].uri),
    )


def bench_spec(
    stack: str, lab: ConfiguredLab, vms: dict[str, VmRef], uris: dict[str, str] | None = None, start_rps: float = 0.0
) -> BenchSpec:
    """The benchmark of this lab, resolved: the VMs, the load, what the mode says of its runs, and
    the fault run (`uris`: each VM's libvirt host, where kill-web pauses it)."""
    spec, mode, plan = lab.spec, lab.mode, lab.plan
    lb_steps, lb_threads = mode.lb_steps(spec), mode.lb_threads(spec)
    retunes = {t: mode.retune(spec, plan, t) for t in sorted({*lb_steps, lb_threads})}
    return BenchSpec(
        stack=stack,
        mode=mode.name,
        vip=str(plan.vip),
        lb_mac=mac_address(plan.lb),
        lb=vms[plan.lb.name],
        clients=tuple(vms[c.name] for c in plan.clients),
        webs=tuple(vms[w.name] for w in plan.webs),
        tool=spec.bench_tool,
        keepalive=spec.bench_keepalive,
        scheme=spec.bench_scheme,
        concurrency=spec.bench_concurrency,
        requests=spec.bench_requests,
        repeats=spec.bench_repeats,
        file_size_bytes=spec.bench_file_size_kib * 1024,
        lb_steps=lb_steps,
        lb_threads=lb_threads,
        retunes={str(t): r for t, r in retunes.items() if r is not None},
        shares=mode.shares,
        balances=mode.balances,
        fault=fault_plan(lab, uris),
        search=spec.bench_search,
        search_start_rps=start_rps,
    )
