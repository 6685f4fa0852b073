"""The lab's libvirt network (pulumi-libvirt's `Network`): one L2 segment, owned by UUID, replaced delete-first."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi.dynamic import CheckFailure, CheckResult

from resources.base import Declared, NamedObjectProvider, ObjectOutputs
from virt.virsh import Virsh


@dataclass(frozen=True)
class NetworkArgs:
    uri: str
    name: str
    xml: str  # rendered by virt/xml.py
    host_addresses: tuple[tuple[str, int], ...]  # the host's address in each subnet, checked for clashes
    owner: pulumi.Input[str]  # the stack's identity (resources/identity.py)


def subnet_collisions(ours: list[str], networks_xml: dict[str, str], our_name: str = "") -> list[str]:
    """Other libvirt networks on this host that hold one of our subnets' host addresses."""
    found = []
    for name, xml in networks_xml.items():
        if name == our_name:
            continue
        for address in ours:
            if f"address='{address}'" in xml or f'address="{address}"' in xml:
                found.append(f"libvirt network {name} already holds {address}")
    return found


class NetworkProvider(NamedObjectProvider):
    kind = "network"
    remove_hint = "virsh net-destroy {name}; virsh net-undefine {name}"

    def lookup(self, virsh: Virsh, name: str) -> tuple[str, bool] | None:
        return virsh.network(name)

    def make(self, virsh: Virsh, xml: str, name: str) -> None:
        virsh.network_define_start(xml, name)

    def remove(self, virsh: Virsh, name: str) -> None:
        virsh.network_remove(name)

    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        """At preview and before anything is created: libvirt answers, our name is ours or free, and
        no other network holds our subnets."""
        result = super().check(olds, news)
        if result.failures:
            return result
        # Our own network (checked just above) may hold our subnets; a foreign one of our name did not get here.
        clashes = subnet_collisions(
            [a for a, _ in news["host_addresses"]], Virsh(news["uri"]).networks_xml(), news["name"]
        )
        if clashes:
            result.failures.append(
                CheckFailure(
                    "host_addresses",
                    "this stack's subnets are taken on this libvirt host (" + "; ".join(clashes) + "): another "
                    "stack is probably up. Destroy it first, or give this stack other l2dsr:frontSubnet and "
                    "l2dsr:serverSubnet values",
                )
            )
        return result


class Network(Declared, module="l2dsr", name="Network"):
    Args = NetworkArgs
    Outputs = ObjectOutputs
    provider = NetworkProvider
    delete_before_replace = True

    name: pulumi.Output[str]
    run_token: pulumi.Output[str]  # new whenever it is created: domains attach to it anew
