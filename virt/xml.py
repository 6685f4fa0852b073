"""libvirt XML for the lab's network and domains: pure functions, golden-tested.

The lab owns these few documents instead of a generic provider's schema, so what reaches libvirt is
exactly what is reviewed here (software-emulation memory cap, direct kernel boot, stable MACs).
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from lab.tuning import RX_QUEUE_SIZE, LbTuning

TCG_TB_CACHE_MIB = 128  # QEMU's TCG translation cache defaults to 1 GiB per guest; 128 MiB costs no speed


@dataclass(frozen=True)
class NetworkDef:
    name: str
    bridge: str  # at most 15 characters (Linux interface names)
    host_addresses: tuple[tuple[str, int], ...]  # (address, prefix): the host's .1 in each subnet
    mtu: int = 0  # 0: libvirt's default (1500); a segment across hosts is narrower (virt/tunnel.py)


def network_xml(net: NetworkDef) -> str:
    """An isolated segment: no forwarding, no DHCP, no DNS; the host only gets a management address."""
    if len(net.bridge) > 15:
        raise ValueError(f"bridge name {net.bridge!r} is longer than 15 characters")
    mtu = f"\n  <mtu size='{net.mtu}'/>" if net.mtu else ""
    ips = "".join(f"\n  <ip address={quoteattr(a)} prefix='{p}'/>" for a, p in net.host_addresses)
    return (
        f"<network>\n  <name>{escape(net.name)}</name>\n"
        f"  <bridge name={quoteattr(net.bridge)} stp='off' delay='0'/>\n"
        f"  <dns enable='no'/>{mtu}{ips}\n</network>\n"
    )


@dataclass(frozen=True)
class DomainTuning:
    """What a domain carries of the LB's tuning (lab/tuning.py): each vCPU pinned to a host CPU, a
    multi-queue NIC with its receive ring, and arguments for the guest's kernel."""

    vcpu_pins: tuple[int, ...]  # host CPU of vCPU 0, 1, ...; empty: not pinned
    nic_queues: int
    rx_queue_size: int
    kernel_args: str


def domain_tuning(tuning: LbTuning, host_cpus: int | None) -> DomainTuning:
    pins = tuple(tuning.host_pins(host_cpus)) if host_cpus else ()
    return DomainTuning(pins, tuning.queues, RX_QUEUE_SIZE, tuning.kernel_args)


@dataclass(frozen=True)
class DomainDef:
    name: str
    domain_type: str  # kvm | qemu
    vcpus: int
    memory_mib: int
    pool: str
    disk_volume: str
    seed_volume: str
    network: str
    mac: str
    kernel: str = ""  # direct kernel boot (the builtin image); empty: boot the disk's own loader
    initrd: str = ""
    cmdline: str = ""
    tuning: DomainTuning | None = None

    @property
    def console_log(self) -> str:
        return console_log_path(self.name)


def console_log_path(domain: str) -> str:
    """A domain's serial console, always logged: with console=ttyS0 and no reader on the pty, the guest
    blocks on console writes (sshd then stalls at the banner and cloud-init never finishes). virtlogd
    drains it here, and readiness and the benchmark read the kernel's panics and OOM kills from it."""
    return f"/var/log/libvirt/qemu/{domain}-console.log"


def domain_xml(d: DomainDef) -> str:
    if d.domain_type not in ("kvm", "qemu"):
        raise ValueError(f"domain type {d.domain_type!r}: expected kvm or qemu")
    t = d.tuning
    if d.kernel:
        cmdline = f"{d.cmdline} {t.kernel_args}" if t and t.kernel_args else d.cmdline
        boot = (
            f"    <kernel>{escape(d.kernel)}</kernel>\n"
            f"    <initrd>{escape(d.initrd)}</initrd>\n"
            f"    <cmdline>{escape(cmdline)}</cmdline>\n"
        )
    else:
        boot = "    <boot dev='hd'/>\n"
    tcg = (
        f"    <tcg>\n      <tb-cache unit='MiB'>{TCG_TB_CACHE_MIB}</tb-cache>\n    </tcg>\n"
        if d.domain_type == "qemu"
        else ""
    )
    cpu = "  <cpu mode='host-passthrough'/>\n" if d.domain_type == "kvm" else ""
    log = f"\n      <log file={quoteattr(d.console_log)} append='off'/>"
    pins = "".join(f"    <vcpupin vcpu='{v}' cpuset='{c}'/>\n" for v, c in enumerate(t.vcpu_pins)) if t else ""
    cputune = f"  <cputune>\n{pins}  </cputune>\n" if pins else ""
    nic_driver = f"\n      <driver queues='{t.nic_queues}' rx_queue_size='{t.rx_queue_size}'/>" if t else ""
    return f"""<domain type='{d.domain_type}'>
  <name>{escape(d.name)}</name>
  <memory unit='MiB'>{d.memory_mib}</memory>
  <vcpu>{d.vcpus}</vcpu>
{cputune}  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
{boot}  </os>
  <features>
    <acpi/>
    <apic/>
{tcg}  </features>
{cpu}  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='volume' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source pool={quoteattr(d.pool)} volume={quoteattr(d.disk_volume)}/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='volume' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source pool={quoteattr(d.pool)} volume={quoteattr(d.seed_volume)}/>
      <target dev='hdc' bus='ide'/>
      <readonly/>
    </disk>
    <interface type='network'>
      <source network={quoteattr(d.network)}/>
      <mac address={quoteattr(d.mac)}/>
      <model type='virtio'/>{nic_driver}
    </interface>
    <serial type='pty'>
      <target port='0'/>{log}
    </serial>
    <console type='pty'>
      <target type='serial' port='0'/>
    </console>
    <channel type='unix'>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
    <rng model='virtio'>
      <backend model='random'>/dev/urandom</backend>
    </rng>
  </devices>
</domain>
"""


def volume_xml(name: str, capacity_bytes: int, fmt: str, backing_path: str = "", backing_format: str = "qcow2") -> str:
    backing = (
        f"  <backingStore>\n    <path>{escape(backing_path)}</path>\n"
        f"    <format type={quoteattr(backing_format)}/>\n  </backingStore>\n"
        if backing_path
        else ""
    )
    return (
        f"<volume>\n  <name>{escape(name)}</name>\n  <capacity unit='bytes'>{capacity_bytes}</capacity>\n"
        f"  <target>\n    <format type={quoteattr(fmt)}/>\n  </target>\n{backing}</volume>\n"
    )
