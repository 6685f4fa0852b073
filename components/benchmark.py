"""The post-deploy benchmark: it runs when its inputs change, not on every `pulumi up`.

Its inputs are everything that shapes a run (the mode and what it says of it, the VMs' boots, the
load settings, benchTrigger); change one, or `pulumi up --replace <urn of bench-run>`, and it runs
again. Its outputs are the results.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from bench.faultrun import FaultPlan
from bench.runner import BenchSpec
from components.vm import Vm
from guest import render
from lab.addressing import AddressPlan, mac_address
from lab.spec import LabSpec
from lbmodes import Mode
from resources.benchmark import Command, CommandArgs, Connection
from runtime.vm import VmRef


def fault_plan(spec: LabSpec, mode: Mode, plan: AddressPlan, uris: dict[str, str] | None = None) -> FaultPlan | None:
    """l2dsr:benchFault with what the mode says of its rotation; None without a fault."""
    fault = spec.bench_fault
    if fault is None:
        return None
    checker, rotation = mode.rotation(spec)
    return FaultPlan(
        action=fault.action,
        web=fault.web,
        at_s=fault.at_s,
        restore_s=fault.restore_s,
        seconds=spec.bench_fault_seconds,
        concurrency=spec.bench_concurrency[0],
        checker=checker,
        rotation=rotation,
        keys={**{str(w.address): w.name for w in plan.webs}, **{w.name: w.name for w in plan.webs}},
        uri=(uris or {}).get(fault.web, spec.hosts[0].uri),
    )


def bench_spec(
    stack: str,
    spec: LabSpec,
    mode: Mode,
    plan: AddressPlan,
    vms: dict[str, VmRef],
    uris: dict[str, str] | None = None,
) -> BenchSpec:
    """The benchmark of this lab, resolved: the VMs, the load, what the mode says of its runs, and
    the fault run (`uris`: each VM's libvirt host, where kill-web pauses it)."""
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
        fault=fault_plan(spec, mode, plan, uris),
    )


@dataclass(frozen=True)
class BenchmarkArgs:
    plan: BenchSpec
    vms: list[Vm]  # what it measures: it waits for their readiness and reruns when one boots anew
    private_key: pulumi.Output[str]
    trigger: str  # l2dsr:benchTrigger
    results_dir: str
    segment: tuple[pulumi.Resource, ...] = ()  # the lab's networks and tunnels: the load crosses them


class Benchmark(pulumi.ComponentResource):
    result: pulumi.Output[dict]

    def __init__(self, name: str, args: BenchmarkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("l2dsr:lab:Benchmark", name, None, opts)
        self.run = Command(
            f"{name}-run",
            CommandArgs(
                connection=Connection(render.LOGIN_USER, args.private_key),
                create=args.plan,
                # The boots it measures: a VM created anew (or rebooted) has a new boot id, and that means a new
                # run; so does a guest whose drifted state was put back in place (a new state token).
                triggers=(
                    args.trigger,
                    *(vm.ready.boot_id for vm in args.vms),
                    *(vm.state.token for vm in args.vms),
                ),
                results_dir=args.results_dir,
            ),
            pulumi.ResourceOptions(
                parent=self,
                depends_on=[*(vm.state for vm in args.vms), *args.segment],
                custom_timeouts=pulumi.CustomTimeouts(create="120m"),
            ),
        )
        self.result = self.run.result
        self.register_outputs({"result": self.result})
