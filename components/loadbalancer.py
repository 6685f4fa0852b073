"""The load balancer VM, as its mode (lbmodes/) builds it: HAProxy, or LVS/IPVS routing, tunnelling or NAT."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from components.vm import GuestConfig, Sites, guest_vm
from lab.addressing import Guest
from virt.xml import DomainTuning


@dataclass(frozen=True)
class LoadBalancerArgs:
    sites: Sites
    config: GuestConfig  # its mode is config.lab.mode
    guest: Guest
    vcpus: int
    memory_mib: int
    tuning: DomainTuning | None = None  # l2dsr:lbTuning seed: host pinning, NIC queues, kernel arguments


class LoadBalancer(pulumi.ComponentResource):
    def __init__(self, name: str, args: LoadBalancerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("l2dsr:lab:LoadBalancer", name, None, opts)
        mode, guest = args.config.lab.mode, args.guest
        self.vm = guest_vm(
            f"{name}-vm", args.sites.of(guest), args.config, guest, args.vcpus, args.memory_mib, self, args.tuning
        )
        self.register_outputs(
            {
                "mode": mode.name,
                "title": mode.title,
                "vip": str(args.config.lab.plan.vip),
                "name": self.vm.ref.domain,
                "address": self.vm.ref.address,
            }
        )
