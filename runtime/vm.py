"""A deployed VM as the host reaches it: the one shape readiness (virt/), the benchmark (bench/) and
the resources (resources/) pass around. The address plan's `lab.addressing.Guest` says what a VM
is to be; this says where the deployed one is."""

from __future__ import annotations

from dataclasses import dataclass, field

from runtime.hostshell import LOCAL, HostRef


@dataclass(frozen=True)
class VmRef:
    name: str  # role-level name: client01, lb, web01
    role: str  # client | lb | web
    address: str  # its primary address: SSH and the benchmark reach it there
    domain: str  # the libvirt domain (l2dsr-<stack>-<name>)
    console_log: str  # the domain's console log on the libvirt host
    host: HostRef = field(default=LOCAL)  # the libvirt host it runs on: its console is read there, SSH jumps through it
    uri: str = "qemu:///system"  # that host's libvirt: the benchmark reads the domain's counters there
