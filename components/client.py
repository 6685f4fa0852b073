"""The client VMs that run the load tool (ab or wrk) against the VIP."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from components.vm import GuestConfig, VmSite, role_vms
from lab.addressing import Guest


@dataclass(frozen=True)
class ClientsArgs:
    site: VmSite
    config: GuestConfig
    guests: tuple[Guest, ...]
    vcpus: int
    memory_mib: int


class Clients(pulumi.ComponentResource):
    def __init__(self, name: str, args: ClientsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("l2dsr:lab:Clients", name, None, opts)
        self.vms = role_vms(name, args.site, args.config, args.guests, args.vcpus, args.memory_mib, self)
        self.register_outputs(
            {"names": [vm.ref.domain for vm in self.vms], "addresses": [vm.ref.address for vm in self.vms]}
        )
