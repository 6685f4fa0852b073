"""What every role VM of one lab shares: built once in __main__.py, handed to each component."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from components.vm import BootSpec, Vm, VmArgs
from guest import render
from lab.addressing import AddressPlan, Guest
from lab.config import LabSpec


@dataclass(frozen=True)
class LabContext:
    stack: str
    spec: LabSpec
    plan: AddressPlan
    domain_type: str
    network: pulumi.Output[str]
    network_run: pulumi.Output[str]
    owner: pulumi.Output[str]
    base_path: pulumi.Output[str]
    boot: BootSpec
    ssh_public_key: pulumi.Output[str]
    ssh_private_key: pulumi.Output[str]

    def vm(self, name: str, host: Guest, parent: pulumi.Resource) -> Vm:
        """One role VM: its cloud-init rendered for its role, sized by the role's config."""
        user_data = self.ssh_public_key.apply(lambda key: render.user_data(self.spec, self.plan, host, key))
        return Vm(
            name,
            VmArgs(
                stack=self.stack,
                uri=self.spec.libvirt_uri,
                pool=self.spec.storage_pool,
                domain_type=self.domain_type,
                host=host,
                vcpus=self.spec.vcpus[host.role],
                memory_mib=self.spec.memory_mib[host.role],
                network=self.network,
                network_run=self.network_run,
                owner=self.owner,
                base_path=self.base_path,
                boot=self.boot,
                user_data=user_data,
                network_config=render.network_config(self.plan, host),
                private_key=self.ssh_private_key,
                lab_vcpus=sum(self.spec.vcpus[h.role] for h in self.plan.guests),
                boot_slots=self.spec.boot_concurrency,
            ),
            pulumi.ResourceOptions(parent=parent),
        )
