"""The VM building block: a copy-on-write overlay on the shared base, a cloud-init seed, a domain.

Domain names are stable (`l2dsr-<stack>-<host>`), so scripts and `virsh` find the VMs; volume
names get a generation per creation (`l2dsr-<stack>-<host>-<gen>.qcow2`). Whatever cloud-init gets
is hashed into the overlay's inputs: changing it replaces the whole VM (a fresh disk that cloud-init
configures from scratch), and changing nothing replaces nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from components.providers import CloudInitDisk, LibvirtDomain, LibvirtVolume, VmReady, content_hash
from guest import render
from lab.addressing import Guest, domain_name, mac_address
from virt.xml import DomainDef, console_log_path, domain_xml


@dataclass(frozen=True)
class BootSpec:
    """How a domain boots: the builtin image by direct kernel boot, others from their own loader."""

    kernel: str = ""
    initrd: str = ""
    cmdline: str = ""


@dataclass(frozen=True)
class VmArgs:
    stack: str
    uri: str
    pool: str
    domain_type: str
    host: Guest
    vcpus: int
    memory_mib: int
    network: pulumi.Output[str]
    network_run: pulumi.Output[str]  # the network's run token: a new network means new domains
    owner: pulumi.Output[str]  # the stack's identity: marks its domains (virt/ownership.py)
    base_path: pulumi.Output[str]
    boot: BootSpec
    user_data: pulumi.Input[str]
    network_config: str
    private_key: pulumi.Input[str]  # readiness logs in with it
    lab_vcpus: int  # vCPUs of the whole lab: what a boot shares the host's cores with
    boot_slots: int  # guests booting at once on the host (0: one per host CPU)


class Vm(pulumi.ComponentResource):
    name: str
    address: str

    def __init__(self, name: str, args: VmArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("l2dsr:lab:Vm", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.name = domain_name(args.stack, args.host)
        self.address = str(args.host.address)
        self.host = args.host

        config_hash = pulumi.Output.from_input(args.user_data).apply(lambda ud: content_hash(ud, args.network_config))
        meta = pulumi.Output.from_input(args.user_data).apply(
            lambda ud: render.meta_data(self.name, args.host, ud, args.network_config)
        )
        self.disk = LibvirtVolume(
            f"{name}-disk",
            uri=args.uri,
            pool=args.pool,
            stem=self.name,
            backing_path=args.base_path,
            config_hash=config_hash,
            opts=child,
        )
        self.seed = CloudInitDisk(
            f"{name}-seed",
            uri=args.uri,
            pool=args.pool,
            stem=f"{self.name}-seed",
            user_data=args.user_data,
            meta_data=meta,
            network_config=args.network_config,
            # After the disk, which stands on the base, which waits for the network: nothing of a
            # stack is created on the host before the network's checks (ownership, subnets) pass.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.disk]),
        )
        xml = pulumi.Output.all(self.disk.name, self.seed.name, args.network).apply(
            lambda parts: domain_xml(
                DomainDef(
                    name=self.name,
                    domain_type=args.domain_type,
                    vcpus=args.vcpus,
                    memory_mib=args.memory_mib,
                    pool=args.pool,
                    disk_volume=parts[0],
                    seed_volume=parts[1],
                    network=parts[2],
                    mac=mac_address(args.host),
                    kernel=args.boot.kernel,
                    initrd=args.boot.initrd,
                    cmdline=args.boot.cmdline,
                )
            )
        )
        self.domain = LibvirtDomain(
            f"{name}-domain",
            uri=args.uri,
            name=self.name,
            xml=xml,
            owner=args.owner,
            network_run=args.network_run,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.disk, self.seed]),
        )
        # Readiness is the VM's own step in `pulumi up`: it shows each VM becoming ready, with its time.
        self.ready = VmReady(
            f"{name}-ready",
            uri=args.uri,
            domain_type=args.domain_type,
            guest={
                "name": args.host.name,
                "domain": self.name,
                "address": self.address,
                "final_message": render.final_message(args.host),
                "console_log": console_log_path(self.name),
            },
            run_token=self.domain.run_token,
            group=args.stack,
            vcpus=args.vcpus,
            lab_vcpus=args.lab_vcpus,
            boot_slots=args.boot_slots,
            login_user=render.LOGIN_USER,
            private_key=args.private_key,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.domain]),
        )
        self.register_outputs(
            {"name": self.name, "address": self.address, "domain": self.domain.id, "bootId": self.ready.boot_id}
        )
