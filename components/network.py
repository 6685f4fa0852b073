"""The lab's one L2 segment: an isolated libvirt network carrying the front and server subnets on
each host, joined across hosts by VXLAN (virt/tunnel.py) when the lab spans several."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pulumi

from lab.addressing import AddressPlan
from lab.spec import HostSpec
from resources.network import Network, NetworkArgs
from resources.tunnel import Tunnel, TunnelArgs
from runtime.hostshell import ref_of
from virt.tunnel import SEGMENT_MTU, interface_name, stack_vni
from virt.xml import NetworkDef, network_xml


def segment_mtu(hosts: int) -> int:
    """0 (libvirt's 1500) on one host; across hosts the guests' MTU leaves room for VXLAN's 50 bytes."""
    return SEGMENT_MTU if hosts > 1 else 0


def network_def(stack: str, plan: AddressPlan, index: int = 0, hosts: int = 1) -> NetworkDef:
    front, server = plan.host_addresses(index)
    return NetworkDef(
        name=f"l2dsr-{stack}",
        bridge=f"l2dsr-{hashlib.sha256(stack.encode()).hexdigest()[:8]}",
        host_addresses=((str(front), plan.front.prefixlen), (str(server), plan.server.prefixlen)),
        mtu=segment_mtu(hosts),
    )


@dataclass(frozen=True)
class LabNetworkArgs:
    hosts: tuple[HostSpec, ...]
    project: str
    stack: str
    plan: AddressPlan
    owner: pulumi.Output[str]


class LabNetwork(pulumi.ComponentResource):
    names: dict[str, pulumi.Output[str]]  # host name -> the network's name there
    run_tokens: dict[str, pulumi.Output[str]]
    ready: dict[str, list[pulumi.Resource]]  # host name -> what a VM there waits for

    def __init__(self, name: str, args: LabNetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("l2dsr:lab:LabNetwork", name, None, opts)
        self.names, self.run_tokens, self.ready = {}, {}, {}
        count = len(args.hosts)
        for i, host in enumerate(args.hosts):
            suffix = "" if i == 0 else f"-{host.name}"  # the first host's keeps the single-host name
            net = network_def(args.stack, args.plan, i, count)
            network = Network(
                f"{name}-segment{suffix}",
                NetworkArgs(
                    uri=host.uri,
                    name=net.name,
                    xml=network_xml(net),
                    host_addresses=net.host_addresses,
                    owner=args.owner,
                ),
                pulumi.ResourceOptions(parent=self),
            )
            self.names[host.name], self.run_tokens[host.name] = network.name, network.run_token
            self.ready[host.name] = [network]
            if count > 1:
                tunnel = Tunnel(
                    f"{name}-vxlan-{host.name}",
                    TunnelArgs(
                        host=ref_of(host),
                        name=interface_name(args.stack),
                        vni=stack_vni(args.project, args.stack),
                        local=host.address,
                        peers=tuple(h.address for h in args.hosts if h is not host),
                        bridge=net.bridge,
                        owner=args.owner,
                        network_run=network.run_token,
                    ),
                    pulumi.ResourceOptions(parent=self, depends_on=[network]),
                )
                self.ready[host.name].append(tunnel)
        self.register_outputs({"names": self.names})
