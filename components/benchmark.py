"""The post-deploy benchmark: it runs when its inputs change, not on every `pulumi up`.

Its inputs are everything that shapes a run (the mode and what it says of it, the VMs' boots, the
load settings, benchTrigger); change one, or `pulumi up --replace <urn of bench-run>`, and it runs
again. Its outputs are the results.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from bench.spec import BenchSpec
from components.vm import Vm
from guest import render
from resources.benchmark import Command, CommandArgs, Connection


@dataclass(frozen=True)
class BenchmarkArgs:
    bench: BenchSpec  # bench/spec.py: what its runs are
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
                create=args.bench,
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
