"""The load balancer VM, as its mode (lbmodes/) builds it: HAProxy, or LVS/IPVS routing, tunnelling or NAT."""

from __future__ import annotations

import pulumi

import lbmodes
from components.context import LabContext


class LoadBalancer(pulumi.ComponentResource):
    def __init__(self, name: str, ctx: LabContext, opts: pulumi.ResourceOptions | None = None):
        super().__init__("l2dsr:lab:LoadBalancer", name, None, opts)
        mode = lbmodes.get(ctx.spec.mode)
        self.mode = mode.name
        self.vm = ctx.vm(f"{name}-vm", ctx.plan.lb, self)
        self.register_outputs(
            {
                "mode": mode.name,
                "title": mode.title,
                "vip": str(ctx.plan.vip),
                "name": self.vm.name,
                "address": self.vm.address,
            }
        )
