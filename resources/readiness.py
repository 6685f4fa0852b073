"""A VM's readiness: its boot started when a slot is free, then watched until cloud-init is done
(virt/readiness.py); its outputs are the boot's facts.

A domain created or started anew (its run token) means a new wait, and a new boot id, which in
turn reruns the benchmark: results always describe the VMs that exist. pulumi-libvirt has no such
resource (its closest is a domain's `wait_for_lease`, which static addresses never satisfy).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult

from resources.base import Declared, ReplaceOnChange, props_of, read_props
from runtime.ssh import KeyFile, Ssh
from runtime.vm import VmRef
from virt.bootslots import default_boot_slots
from virt.readiness import Ready, boot, boot_budget_s
from virt.virsh import Virsh


@dataclass(frozen=True)
class VmReadyArgs:
    uri: str
    domain_type: str
    guest: VmRef
    final_message: str  # what cloud-init prints on the console when it is done (guest/render.py)
    run_token: pulumi.Input[str]  # the domain's: a domain created anew is a new boot to wait for
    group: str  # the stack: its waits share a verdict
    vcpus: int
    lab_vcpus: int  # vCPUs of the whole lab: what a boot shares the host's cores with
    boot_slots: int  # guests booting at once on the host; 0: one per host CPU
    login_user: str
    private_key: pulumi.Input[str]


class ReadinessProvider(ReplaceOnChange):
    not_compared = ("lab_vcpus", "boot_slots")

    def create(self, props: dict[str, Any]) -> CreateResult:
        args = read_props(VmReadyArgs, props)
        virsh = Virsh(args.uri)
        node = virsh.nodeinfo()
        cpus = node[0] if node else os.cpu_count() or 1
        slots = args.boot_slots or default_boot_slots(cpus)
        # A boot shares the cores with the other boots in progress (at most the slots).
        booting_vcpus = min(args.lab_vcpus, slots * args.vcpus)
        budget = boot_budget_s(args.domain_type, booting_vcpus, cpus)
        with KeyFile(str(args.private_key)) as key:  # the plain key, in the provider
            ready = boot(
                args.guest,
                args.final_message,
                Ssh.to(args.login_user, key, [args.guest]),
                virsh,
                budget,
                args.group,
                slots,
            )
        return CreateResult(id_=f"{args.guest.domain}/{ready.boot_id}", outs={**props, **props_of(ready)})

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        pass  # a wait leaves nothing behind


class VmReady(Declared, module="l2dsr", name="VmReady"):
    Args = VmReadyArgs
    Outputs = Ready
    provider = ReadinessProvider
    secret_outputs = ("private_key",)

    seconds: pulumi.Output[float]
    boot_id: pulumi.Output[str]
    memory_available_mib: pulumi.Output[int]
    memory_total_mib: pulumi.Output[int]
    resets: pulumi.Output[int]
    cpu_seconds: pulumi.Output[float]
    waited_s: pulumi.Output[float]
