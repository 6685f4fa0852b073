"""The nginx web servers, with what their mode (lbmodes/) needs: the VIP on lo or on a tunnel, or a route via the LB.

proxy and dsr give them the same setup, so a switch between those two never touches them."""

from __future__ import annotations

import pulumi

from components.vm import RoleArgs, role_vms


class WebTierArgs(RoleArgs):
    """The web tier's VMs: the address plan's webs, sized by l2dsr:webVcpus/webMemoryMiB."""


class WebTier(pulumi.ComponentResource):
    def __init__(self, name: str, args: WebTierArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("l2dsr:lab:WebTier", name, None, opts)
        self.vms = role_vms(name, args, self)
        self.register_outputs(
            {"names": [vm.ref.domain for vm in self.vms], "addresses": [vm.ref.address for vm in self.vms]}
        )
