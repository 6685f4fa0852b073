"""The load balancer VM: HAProxy (proxy) or LVS/IPVS direct routing (dsr), per guest.render.LB_MODES."""

from __future__ import annotations

import pulumi

from components.context import LabContext


class LoadBalancer(pulumi.ComponentResource):
    def __init__(self, name: str, ctx: LabContext, opts: pulumi.ResourceOptions | None = None):
        super().__init__("l2dsr:lab:LoadBalancer", name, None, opts)
        self.mode = ctx.spec.mode
        self.vm = ctx.vm(f"{name}-vm", ctx.plan.lb, self)
        self.register_outputs({"mode": self.mode, "name": self.vm.name, "address": self.vm.address})
