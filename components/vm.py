"""The VM building block: a copy-on-write overlay on the shared base, a cloud-init seed, a domain,
and its readiness.

Domain names are stable (`l2dsr-<stack>-<guest>`), so scripts and `virsh` find the VMs; volume
names get a generation per creation (`l2dsr-<stack>-<guest>-<gen>.qcow2`). Whatever cloud-init gets
is hashed into the overlay's inputs: changing it replaces the whole VM (a fresh disk that cloud-init
configures from scratch), and changing nothing replaces nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from guest import render, state
from lab.addressing import Guest, domain_name, mac_address
from lab.files import Check
from resolution import Configured
from resources.domain import Domain, DomainArgs
from resources.gueststate import GuestState, GuestStateArgs
from resources.readiness import VmReady, VmReadyArgs
from resources.volume import CloudInitDisk, CloudInitDiskArgs, Volume, VolumeArgs, content_hash
from runtime.hostshell import HostRef
from runtime.vm import VmRef
from virt.xml import DomainDef, DomainTuning, console_log_path, domain_xml


@dataclass(frozen=True)
class BootSpec:
    """How a domain boots: the builtin image by direct kernel boot, others from their own loader."""

    kernel: str = ""
    initrd: str = ""
    cmdline: str = ""


@dataclass(frozen=True)
class VmSite:
    """Where and how every VM of one lab runs: what the roles' components share."""

    stack: str
    uri: str
    pool: str
    domain_type: str
    network: pulumi.Output[str]
    network_run: pulumi.Output[str]  # the network's run token: a new network means new domains
    owner: pulumi.Output[str]  # the stack's identity: marks its domains (virt/ownership.py)
    base_path: pulumi.Output[str]
    kernel: pulumi.Output[str]  # the base's kernel and initrd as volumes on this host (empty: the disk boots)
    initrd: pulumi.Output[str]
    cmdline: str
    host: HostRef  # the libvirt host: its console logs are read there, and SSH to its guests jumps through it
    boot_group: str  # the boots that take turns (virt/bootslots.py): the stack's on this host
    private_key: pulumi.Output[str]  # readiness logs in with it
    lab_vcpus: int  # vCPUs of the whole lab: what a boot shares the host's cores with
    boot_slots: int  # guests booting at once on the host (0: one per host CPU)


@dataclass(frozen=True)
class Sites:
    """Each guest's site: the host it is placed on (lab/placement.py)."""

    by_guest: dict[str, VmSite]

    def of(self, guest: Guest) -> VmSite:
        return self.by_guest[guest.name]


@dataclass(frozen=True)
class GuestConfig:
    """What a guest's cloud-init is rendered from (guest/render.py): the configured lab (its spec, mode
    and plan) and the key."""

    lab: Configured
    ssh_public_key: pulumi.Output[str]
    mtu: int = 0  # the segment's, when it spans hosts (components/network.py)

    def user_data(self, guest: Guest) -> pulumi.Output[str]:
        lab = self.lab
        return self.ssh_public_key.apply(lambda key: render.user_data(lab.spec, lab.mode, lab.plan, guest, key))

    def network_config(self, guest: Guest) -> str:
        return render.network_config(self.lab.plan, guest, self.mtu)

    def state(self, guest: Guest) -> tuple[tuple[Check, ...], str]:
        """What the running guest must show of its role, and the command that puts it back (guest/state.py)."""
        lab = self.lab
        return state.checks(lab.spec, lab.mode, lab.plan, guest), state.repair_command(
            lab.spec, lab.mode, lab.plan, guest
        )


@dataclass(frozen=True)
class VmArgs:
    site: VmSite
    guest: Guest
    vcpus: int
    memory_mib: int
    user_data: pulumi.Input[str]
    network_config: str
    checks: tuple[Check, ...]  # what the running guest must show (guest/state.py), read at every preview
    repair: str  # how its role is re-applied in place when it drifted
    tuning: DomainTuning | None = None  # the LB's, with l2dsr:lbTuning seed


class Vm(pulumi.ComponentResource):
    ref: VmRef

    def __init__(self, name: str, args: VmArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("l2dsr:lab:Vm", name, None, opts)
        site, guest = args.site, args.guest
        domain = domain_name(site.stack, guest)
        self.ref = VmRef(
            guest.name, guest.role, str(guest.address), domain, console_log_path(domain), site.host, site.uri
        )
        user_data = pulumi.Output.from_input(args.user_data)
        self.disk = Volume(
            f"{name}-disk",
            VolumeArgs(
                uri=site.uri,
                pool=site.pool,
                stem=domain,
                backing_path=site.base_path,
                config_hash=user_data.apply(lambda ud: content_hash(ud, args.network_config)),
            ),
            pulumi.ResourceOptions(parent=self),
        )
        self.seed = CloudInitDisk(
            f"{name}-seed",
            CloudInitDiskArgs(
                uri=site.uri,
                pool=site.pool,
                stem=f"{domain}-seed",
                user_data=user_data,
                meta_data=user_data.apply(lambda ud: render.meta_data(domain, guest, ud, args.network_config)),
                network_config=args.network_config,
            ),
            # After the disk, which stands on the base, which waits for the network: nothing of a
            # stack is created on the host before the network's checks (ownership, subnets) pass.
            pulumi.ResourceOptions(parent=self, depends_on=[self.disk]),
        )
        xml = pulumi.Output.all(self.disk.name, self.seed.name, site.network, site.kernel, site.initrd).apply(
            lambda parts: domain_xml(
                DomainDef(
                    name=domain,
                    domain_type=site.domain_type,
                    vcpus=args.vcpus,
                    memory_mib=args.memory_mib,
                    pool=site.pool,
                    disk_volume=parts[0],
                    seed_volume=parts[1],
                    network=parts[2],
                    mac=mac_address(guest),
                    kernel=parts[3],
                    initrd=parts[4],
                    cmdline=site.cmdline if parts[3] else "",
                    tuning=args.tuning,
                )
            )
        )
        self.domain = Domain(
            f"{name}-domain",
            DomainArgs(uri=site.uri, name=domain, xml=xml, owner=site.owner, network_run=site.network_run),
            pulumi.ResourceOptions(parent=self, depends_on=[self.disk, self.seed]),
        )
        # Readiness is the VM's own step in `pulumi up`: it shows each VM becoming ready, with its time.
        self.ready = VmReady(
            f"{name}-ready",
            VmReadyArgs(
                uri=site.uri,
                domain_type=site.domain_type,
                guest=self.ref,
                final_message=render.final_message(guest),
                run_token=self.domain.run_token,
                group=site.boot_group,
                vcpus=args.vcpus,
                lab_vcpus=site.lab_vcpus,
                boot_slots=site.boot_slots,
                login_user=render.LOGIN_USER,
                private_key=site.private_key,
            ),
            pulumi.ResourceOptions(parent=self, depends_on=[self.domain]),
        )
        # Its role's state, read on the running guest at every preview; drift is repaired in place.
        self.state = GuestState(
            f"{name}-state",
            GuestStateArgs(
                guest=self.ref,
                checks=args.checks,
                repair=args.repair,
                boot_id=self.ready.boot_id,
                login_user=render.LOGIN_USER,
                private_key=site.private_key,
            ),
            pulumi.ResourceOptions(parent=self, depends_on=[self.ready]),
        )
        self.register_outputs(
            {
                "name": domain,
                "address": self.ref.address,
                "domain": self.domain.id,
                "bootId": self.ready.boot_id,
                "repaired": self.state.repaired,
            }
        )


@dataclass(frozen=True)
class RoleArgs:
    """What a component of several same-role VMs takes (WebTierArgs, ClientsArgs)."""

    sites: Sites
    config: GuestConfig
    guests: tuple[Guest, ...]
    vcpus: int
    memory_mib: int


def guest_vm(
    name: str,
    site: VmSite,
    config: GuestConfig,
    guest: Guest,
    vcpus: int,
    memory_mib: int,
    parent: pulumi.Resource,
    tuning: DomainTuning | None = None,
) -> Vm:
    """One VM, rendered for its guest and sized by its role's settings, as a child of `parent`."""
    checks, repair = config.state(guest)
    args = VmArgs(
        site, guest, vcpus, memory_mib, config.user_data(guest), config.network_config(guest), checks, repair, tuning
    )
    return Vm(name, args, pulumi.ResourceOptions(parent=parent))


def role_vms(prefix: str, args: RoleArgs, parent: pulumi.Resource) -> list[Vm]:
    """One VM per guest of a role."""
    return [
        guest_vm(f"{prefix}-{g.name}", args.sites.of(g), args.config, g, args.vcpus, args.memory_mib, parent)
        for g in args.guests
    ]
