"""A VM's libvirt domain (pulumi-libvirt's `Domain`): defined here, started by its readiness when a boot
slot is free; owned by UUID, replaced delete-first.

Where ours differs from pulumi-libvirt's: the domain takes its whole XML (virt/xml.py renders it from
a `DomainDef`) instead of typed disk/interface blocks plus an XSLT; it is only defined, not started.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from resources.base import Declared, NamedObjectProvider, ObjectOutputs
from virt.virsh import Virsh


@dataclass(frozen=True)
class DomainArgs:
    uri: str
    name: str
    xml: pulumi.Input[str]
    owner: pulumi.Input[str]  # the stack's identity: marks the domain (virt/ownership.py)
    network_run: pulumi.Input[str]  # the network's run token: a network created anew means domains anew


class DomainProvider(NamedObjectProvider):
    kind = "domain"
    remove_hint = "virsh destroy {name}; virsh undefine {name}"

    def lookup(self, virsh: Virsh, name: str) -> tuple[str, bool] | None:
        return virsh.domain(name)

    def make(self, virsh: Virsh, xml: str, name: str) -> None:
        virsh.with_xml("define", xml)  # started by its readiness, when a boot slot is free

    def remove(self, virsh: Virsh, name: str) -> None:
        virsh.domain_remove(name)


class Domain(Declared, module="l2dsr", name="Domain"):
    Args = DomainArgs
    Outputs = ObjectOutputs
    provider = DomainProvider
    delete_before_replace = True

    name: pulumi.Output[str]
    run_token: pulumi.Output[str]  # new whenever it is created: readiness waits for the new boot
