"""The post-deploy benchmark as a resource: it runs when its inputs change, not on every `pulumi up`.

Its inputs are everything that shapes a run (mode and what the mode says of it, the VMs' boots,
the load settings, benchTrigger);
change one, or `pulumi up --replace <urn>`, and it runs again. Its outputs are the results.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, Resource

import lbmodes
from bench.runner import BenchParams, run
from bench.ssh import KeyFile, Ssh
from components.providers import ReplaceOnChange
from components.vm import Vm
from guest import render
from lab.addressing import AddressPlan, domain_name, mac_address
from lab.config import LabSpec
from virt.xml import console_log_path


class BenchmarkProvider(ReplaceOnChange):
    not_compared = ("results_dir",)

    def create(self, props: dict[str, Any]) -> CreateResult:
        params = BenchParams.from_props(props["params"], props["results_dir"])
        with KeyFile(props["private_key"]) as key:
            result = run(params, Ssh(render.LOGIN_USER, key))
        return CreateResult(id_=result["raw_dir"], outs={**props, "result": result})

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        pass  # the raw results stay on the host: they are the record of the run


def bench_params(stack: str, spec: LabSpec, plan: AddressPlan) -> dict:
    def node(h) -> dict:
        return {
            "name": h.name,
            "role": h.role,
            "address": str(h.address),
            "console_log": console_log_path(domain_name(stack, h)),
        }

    mode = lbmodes.get(spec.mode)
    lb_steps, lb_threads = mode.lb_steps(spec), mode.lb_threads(spec)
    retunes = {t: mode.retune(spec, plan, t) for t in sorted({*lb_steps, lb_threads})}
    params = BenchParams(
        stack=stack,
        mode=spec.mode,
        vip=str(plan.vip),
        lb_mac=mac_address(plan.lb),
        lb=node(plan.lb),
        clients=[node(c) for c in plan.clients],
        webs=[node(w) for w in plan.webs],
        tool=spec.bench_tool,
        scheme=spec.bench_scheme,
        concurrency=list(spec.bench_concurrency),
        requests=list(spec.bench_requests),
        repeats=spec.bench_repeats,
        file_size_bytes=spec.bench_file_size_kib * 1024,
        lb_steps=list(lb_steps),
        lb_threads=lb_threads,
        retunes={str(t): r.as_dict() for t, r in retunes.items() if r is not None},
        shares=mode.shares.as_dict(),
        results_dir="",
    )
    out = asdict(params)
    del out["results_dir"]
    return out


class BenchmarkRun(Resource, module="l2dsr", name="BenchmarkRun"):
    result: pulumi.Output[dict]


class Benchmark(pulumi.ComponentResource):
    result: pulumi.Output[dict]

    def __init__(
        self,
        name: str,
        *,
        stack: str,
        spec: LabSpec,
        plan: AddressPlan,
        vms: list[Vm],
        private_key: pulumi.Output[str],
        results_dir: str,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("l2dsr:lab:Benchmark", name, None, opts)
        props = {
            "params": bench_params(stack, spec, plan),
            "trigger": spec.bench_trigger,
            # The boots it measures: a VM created anew (or rebooted) has a new boot id, and that means a new run.
            "vms": [vm.ready.boot_id for vm in vms],
            "private_key": private_key,
            "results_dir": results_dir,
            "result": None,
        }
        self.run = BenchmarkRun(
            BenchmarkProvider(),
            f"{name}-run",
            props,
            pulumi.ResourceOptions(
                parent=self, depends_on=[vm.ready for vm in vms], custom_timeouts=pulumi.CustomTimeouts(create="120m")
            ),
        )
        self.result = self.run.result
        self.register_outputs({"result": self.result})
