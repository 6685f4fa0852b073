"""The seed's optional tuning of the LB ("core isolation and IRQ settings"), as a profile a VM can
take (l2dsr:lbTuning seed). Pure: what each layer applies comes from here.

What the seed did on hardware, and what the lab does with a VM of n vCPUs (n >= 2):
- isolate cores (`isolcpus=0-12` on the kernel command line): vCPU 0 stays the OS's, vCPUs 1..n-1
  are isolated (`isolcpus=1-...` on the guest's command line, by direct kernel boot);
- map the balancer onto the isolated cores (`cpu-map`/`taskset`): HAProxy's threads are mapped
  onto the isolated vCPUs (IPVS runs in the kernel, where the packets' interrupts land);
- stop irqbalance and `kernel.numa_balancing = 0`: both (irqbalance is not in the image; stopped
  if present);
- multi-queue NIC (`ethtool -L combined 4`) with each queue's IRQ pinned to its own isolated core
  (`/proc/irq/N/smp_affinity_list`): virtio-net with one queue pair per LB vCPU (libvirt
  `<driver queues>`; the guest's driver enables them all), each queue's input and output IRQs pinned
  round robin onto the isolated vCPUs;
- ring sizes (`ethtool -G rx 2047 tx 2047`): virtio's receive ring at its largest, 1024 (libvirt
  `rx_queue_size`; a power of two, at most 1024). The transmit ring cannot be set for a tap NIC
  (libvirt allows `tx_queue_size` only with vhost-user), and virtio-net takes no `ethtool -G`;
- `txqueuelen 30000` and `net.core.netdev_max_backlog = 9000000`: both, as the seed.
On the host, each LB vCPU is pinned to its own host CPU (libvirt `<cputune><vcpupin>`), taken from
the top of the host's CPUs: a VM's isolated vCPU is only isolated if its thread is not moved around.
"""

from __future__ import annotations

from dataclasses import dataclass

PROFILES = ("none", "seed")
RX_QUEUE_SIZE = 1024  # virtio's largest receive ring (the seed's 2047 is its NIC's)
TXQUEUELEN = 30000
SYSCTLS = {"net.core.netdev_max_backlog": 9000000, "kernel.numa_balancing": 0}


def cpu_range(cpus: list[int]) -> str:
    """[1, 2, 3] -> "1-3"; [1] -> "1" (the kernel's and HAProxy's list syntax for a contiguous run)."""
    return str(cpus[0]) if len(cpus) == 1 else f"{cpus[0]}-{cpus[-1]}"


@dataclass(frozen=True)
class LbTuning:
    vcpus: int

    @property
    def isolated(self) -> list[int]:
        return list(range(1, self.vcpus))

    @property
    def queues(self) -> int:
        return self.vcpus

    @property
    def kernel_args(self) -> str:
        return f"isolcpus={cpu_range(self.isolated)}"

    def irq_cpu(self, queue: int) -> int:
        """The isolated vCPU that takes queue `queue`'s interrupts."""
        return self.isolated[queue % len(self.isolated)]

    def host_pins(self, host_cpus: int) -> list[int]:
        """The host CPU of each LB vCPU: the top ones (the host's own work keeps CPU 0 where it can)."""
        return [(host_cpus - self.vcpus + i) % host_cpus for i in range(self.vcpus)]

    def sysctl_conf(self) -> str:
        lines = ["# l2dsr lbTuning seed: the seed's optional tuning of the LB (lab/tuning.py)"]
        return "\n".join([*lines, *(f"{k} = {v}" for k, v in SYSCTLS.items())]) + "\n"


def tuning_of(profile: str, lb_vcpus: int) -> LbTuning | None:
    return LbTuning(lb_vcpus) if profile == "seed" else None
