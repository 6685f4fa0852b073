"""The client VMs that run the load tool (ab or wrk) against the VIP."""

from __future__ import annotations

import pulumi

from components.context import LabContext


class Clients(pulumi.ComponentResource):
    def __init__(self, name: str, ctx: LabContext, opts: pulumi.ResourceOptions | None = None):
        super().__init__("l2dsr:lab:Clients", name, None, opts)
        self.vms = [ctx.vm(f"{name}-{host.name}", host, self) for host in ctx.plan.clients]
        self.register_outputs({"names": [vm.name for vm in self.vms], "addresses": [vm.address for vm in self.vms]})
