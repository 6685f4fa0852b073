"""The client VMs that run the load tool (ab or wrk) against the VIP."""

from __future__ import annotations

import pulumi

from components.vm import RoleArgs, role_vms


class ClientsArgs(RoleArgs):
    """The client VMs: the address plan's clients, sized by l2dsr:clientVcpus/clientMemoryMiB."""


class Clients(pulumi.ComponentResource):
    def __init__(self, name: str, args: ClientsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("l2dsr:lab:Clients", name, None, opts)
        self.vms = role_vms(name, args, self)
        self.register_outputs(
            {"names": [vm.ref.domain for vm in self.vms], "addresses": [vm.ref.address for vm in self.vms]}
        )
