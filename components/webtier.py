"""The nginx web servers, with what their mode (lbmodes/) needs: the VIP on lo or on a tunnel, or a route via the LB.

proxy and dsr give them the same setup, so a switch between those two never touches them."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from components.vm import GuestConfig, VmSite, role_vms
from lab.addressing import Guest


@dataclass(frozen=True)
class WebTierArgs:
    site: VmSite
    config: GuestConfig
    guests: tuple[Guest, ...]
    vcpus: int
    memory_mib: int


class WebTier(pulumi.ComponentResource):
    def __init__(self, name: str, args: WebTierArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("l2dsr:lab:WebTier", name, None, opts)
        self.vms = role_vms(name, args.site, args.config, args.guests, args.vcpus, args.memory_mib, self)
        self.register_outputs(
            {"names": [vm.ref.domain for vm in self.vms], "addresses": [vm.ref.address for vm in self.vms]}
        )
