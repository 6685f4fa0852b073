"""The nginx web servers, with what their mode (lbmodes/) needs: the VIP on lo or on a tunnel, or a route via the LB.

proxy and dsr give them the same setup, so a switch between those two never touches them."""

from __future__ import annotations

import pulumi

from components.context import LabContext


class WebTier(pulumi.ComponentResource):
    def __init__(self, name: str, ctx: LabContext, opts: pulumi.ResourceOptions | None = None):
        super().__init__("l2dsr:lab:WebTier", name, None, opts)
        self.vms = [ctx.vm(f"{name}-{guest.name}", guest, self) for guest in ctx.plan.webs]
        self.register_outputs({"names": [vm.name for vm in self.vms], "addresses": [vm.address for vm in self.vms]})
