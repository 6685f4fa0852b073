"""Does the lab fit the libvirt host? The sum of guest memory and the vCPUs against what the host has.

Refused (a problem naming the key): a guest with more vCPUs than the host has CPUs, or guests whose
memory, with QEMU's own per guest, exceeds the host's. Warned (the lab still runs, the numbers
suffer): more than MEMORY_WARN_SHARE of the host's memory, or more than VCPU_WARN_RATIO guest
vCPUs per host CPU. The host's figures come from libvirt (`virsh nodeinfo`), so a remote URI is
checked against its own host.
"""

from __future__ import annotations

from dataclasses import dataclass

from lab.spec import PROJECT, LabSpec, Problem

# QEMU's own memory per guest, on top of the guest's: measured here a 384 MiB TCG guest at 614.5 MiB
# RSS (its translation cache is capped at 128 MiB, virt/xml.py); KVM has no translation cache.
QEMU_OVERHEAD_MIB = {"qemu": 240, "kvm": 80}
MEMORY_WARN_SHARE = 0.75  # of the host's memory: above it the host itself starts to compete
VCPU_WARN_RATIO = 2.0  # guest vCPUs per host CPU: the lab stack runs 4 on 2 cores


@dataclass(frozen=True)
class HostFacts:
    cpus: int
    memory_mib: int
    # where the lab's bridge would be the host's own (a system libvirtd, a remote host): its IPv4
    # addresses and routes, as (device, prefix); empty where the lab has a namespace of its own
    addresses: tuple[tuple[str, str], ...] = ()
    routes: tuple[tuple[str, str], ...] = ()


def host_fit(
    spec: LabSpec,
    domain_type: str,
    host: HostFacts | None,
    counts: dict[str, int] | None = None,
    name: str = "",
) -> tuple[list[Problem], list[str]]:
    """(problems, warnings) of this lab, or of the VMs `counts` says are placed on the host `name`
    (several hosts, lab/placement.py); none when libvirt did not say (its resources' own checks
    report a libvirt that does not answer)."""
    problems: list[Problem] = []
    warnings: list[str] = []
    if host is None:
        return problems, warnings
    counts = counts or {"client": spec.client_count, "lb": 1, "web": spec.web_count}
    counts = {r: n for r, n in counts.items() if n}
    if not counts:
        return problems, warnings
    this = f"host {name}" if name else "this host"
    whose, needs = (f"the VMs placed on {name}", "need") if name else ("the lab", "needs")
    place_fewer = f", or place fewer VMs on {name} ({PROJECT}:placement)" if name else ""
    sized = "" if name else " (Pulumi.lab.yaml is sized for a 24 GiB host)"
    for role in counts:
        if spec.vcpus[role] > host.cpus:
            problems.append(
                Problem(
                    f"{role}Vcpus",
                    f"{spec.vcpus[role]} vCPUs is more than {this}'s {host.cpus} CPUs; set {host.cpus} or fewer{place_fewer}",
                )
            )
    overhead = QEMU_OVERHEAD_MIB.get(domain_type, QEMU_OVERHEAD_MIB["qemu"])
    need = {role: counts[role] * (spec.memory_mib[role] + overhead) for role in counts}
    total = sum(need.values())
    explain = " + ".join(
        f"{counts[r]} {r}{'s' if counts[r] > 1 else ''} x ({spec.memory_mib[r]} + {overhead} QEMU)" for r in counts
    )
    biggest = max(need, key=lambda r: need[r])
    keys = f"{PROJECT}:webCount or {PROJECT}:webMemoryMiB" if biggest == "web" else f"{PROJECT}:{biggest}MemoryMiB"
    if total > host.memory_mib:
        problems.append(
            Problem(
                f"{biggest}MemoryMiB",
                f"{whose} {needs} {total} MiB ({explain}) and {this} has "
                f"{host.memory_mib} MiB; lower {keys}{place_fewer}{sized}",
            )
        )
    elif total > MEMORY_WARN_SHARE * host.memory_mib:
        warnings.append(
            f"{whose} {needs} {total} MiB ({explain}), {100 * total // host.memory_mib}% of {this}'s "
            f"{host.memory_mib} MiB (above {MEMORY_WARN_SHARE:.0%}): the host may swap or reclaim, and the "
            f"numbers would measure that; lower {keys}"
        )
    vcpus = sum(counts[r] * spec.vcpus[r] for r in counts)
    if vcpus > VCPU_WARN_RATIO * host.cpus:
        warnings.append(
            f"{whose}'s {vcpus} vCPUs share {this}'s {host.cpus} CPUs ({vcpus / host.cpus:.1f} per CPU, above "
            f"{VCPU_WARN_RATIO:.0f}): the benchmark's numbers depend on the host's CPUs as much as on the load "
            f"balancer (boots take turns: {PROJECT}:bootConcurrency); lower {PROJECT}:webCount or the *Vcpus keys"
        )
    return problems, warnings
