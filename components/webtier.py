"""The nginx web servers: identical in both modes (VIP on lo, ARP silenced), so a mode switch never touches them."""

from __future__ import annotations

import pulumi

from components.context import LabContext


class WebTier(pulumi.ComponentResource):
    def __init__(self, name: str, ctx: LabContext, opts: pulumi.ResourceOptions | None = None):
        super().__init__("l2dsr:lab:WebTier", name, None, opts)
        self.vms = [ctx.vm(f"{name}-{host.name}", host, self) for host in ctx.plan.webs]
        self.register_outputs({"names": [vm.name for vm in self.vms], "addresses": [vm.address for vm in self.vms]})
