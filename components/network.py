"""The lab's one L2 segment: an isolated libvirt network carrying the front and server subnets."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pulumi

from lab.addressing import AddressPlan
from resources.network import Network, NetworkArgs
from virt.xml import NetworkDef, network_xml


def network_def(stack: str, plan: AddressPlan) -> NetworkDef:
    return NetworkDef(
        name=f"l2dsr-{stack}",
        bridge=f"l2dsr-{hashlib.sha256(stack.encode()).hexdigest()[:8]}",
        host_addresses=(
            (str(plan.host_front), plan.front.prefixlen),
            (str(plan.host_server), plan.server.prefixlen),
        ),
    )


@dataclass(frozen=True)
class LabNetworkArgs:
    uri: str
    stack: str
    plan: AddressPlan
    owner: pulumi.Output[str]


class LabNetwork(pulumi.ComponentResource):
    name: pulumi.Output[str]
    run_token: pulumi.Output[str]

    def __init__(self, name: str, args: LabNetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("l2dsr:lab:LabNetwork", name, None, opts)
        net = network_def(args.stack, args.plan)
        self.network = Network(
            f"{name}-segment",
            NetworkArgs(
                uri=args.uri,
                name=net.name,
                xml=network_xml(net),
                host_addresses=net.host_addresses,
                owner=args.owner,
            ),
            pulumi.ResourceOptions(parent=self),
        )
        self.name = self.network.name
        self.run_token = self.network.run_token
        self.register_outputs({"name": self.name})
