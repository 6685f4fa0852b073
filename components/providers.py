"""The lab's libvirt resources as Pulumi dynamic providers (identity, network, volumes, seed disk,
domain, readiness, SSH key).

Why not pulumi-libvirt: its Go module (and terraform-provider-libvirt's) is not served by the
module proxy these machines reach, and upstream has deprecated it. The lab needs a few small
resources; each is a few `virsh` calls, and the XML it sends is rendered in virt/xml.py.

The lifecycle every libvirt resource here follows:
- an input change replaces it, never updates it in place;
- a domain or network keeps its stable name and is replaced delete-first; its UUID marks it as
  this stack's and as the one this resource created (virt/ownership.py), so a delete never removes
  another stack's object or a replacement's new one, and a same-named foreign object is refused at
  preview; volumes get a fresh name per creation, so they are replaced create-first;
- drift is read from the host on every preview/up (`diff`) and on `pulumi refresh` (`read`): a
  missing object, or a stopped domain or network, is created again (and what stands on it follows:
  a domain on a new network, readiness and the benchmark on a new domain), so preview shows all of it;
- libvirt not answering is an error, never "absent" (virt/virsh.py).

The provider code runs in our provider process (engine/provider_host.py), which imports this
module by name (PYTHONPATH is the project root).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    CreateResult,
    DiffResult,
    ReadResult,
    Resource,
    ResourceProvider,
)
from pulumi.runtime import rpc

from engine import runtime
from virt import ownership
from virt.virsh import LibvirtUnknown, Virsh, VirshError, size_of

PROVIDER_KEY = "__provider"


class ReplaceOnChange(ResourceProvider):
    """Any input change replaces the resource; with no input change, `drift` may still ask for a
    replacement (the real object is gone or stopped)."""

    serialize_as_secret_always = False
    delete_first = False  # a replacement's old object goes after the new one exists, unless names clash
    not_compared: tuple[str, ...] = ()  # inputs that never cause a replacement

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = sorted(
            k for k in news if k != PROVIDER_KEY and k not in self.not_compared and olds.get(k) != news.get(k)
        )
        if changed:
            return DiffResult(changes=True, replaces=changed, delete_before_replace=self.delete_first)
        drifted = self.drift(olds)
        return DiffResult(changes=bool(drifted), replaces=drifted, delete_before_replace=self.delete_first)

    def drift(self, _olds: dict[str, Any]) -> list[str]:
        """The outputs in which the real object differs from the state (each means: create it again).

        Not an update in place: a preview cannot show an update's new outputs, so what stands on the
        object (readiness, the benchmark) would only be planned during the up itself."""
        return []


def _opts(opts: pulumi.ResourceOptions | None, **extra: Any) -> pulumi.ResourceOptions:
    return pulumi.ResourceOptions.merge(opts or pulumi.ResourceOptions(), pulumi.ResourceOptions(**extra))


def _known(value: Any) -> bool:
    return value is not None and value != rpc.UNKNOWN


def _looked_up(what: str, lookup):
    """A lookup's answer, or one readable failure when libvirt cannot say (never "absent")."""
    try:
        return lookup()
    except LibvirtUnknown as e:
        raise runtime.LabFailure(
            f"{what}: cannot tell whether it exists on the host ({e}); nothing was changed"
        ) from None


def _drift_note(message: str) -> None:
    runtime.log(message, severity="warning")


def libvirt_failures(uri: str) -> list[CheckFailure]:
    try:
        Virsh(uri).run("version", timeout=30)
    except VirshError as e:
        return [
            CheckFailure("uri", f"libvirt at {uri} does not answer ({e}); run ./labctl setup or fix l2dsr:libvirtUri")
        ]
    return []


# ---- the stack's identity ------------------------------------------------------------------------


class IdentityProvider(ResourceProvider):
    """A random token made once per stack state: what marks the libvirt objects as this stack's."""

    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        owner = f"{props['project']}/{props['stack']}/{secrets.token_hex(8)}"
        return CreateResult(id_=owner, outs={**props, "owner": owner})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_, props)


class StackIdentity(Resource, module="l2dsr", name="StackIdentity"):
    owner: pulumi.Output[str]

    def __init__(self, resource_name: str, *, project: str, stack: str, opts: pulumi.ResourceOptions | None = None):
        super().__init__(IdentityProvider(), resource_name, {"project": project, "stack": stack, "owner": None}, opts)


# ---- domains and networks: stable names, owned by UUID -------------------------------------------


class NamedObjectProvider(ReplaceOnChange):
    """A domain or network: one per name on the host, so replaced delete-first, and only ever
    created, adopted or deleted when its UUID says it is this stack's (virt/ownership.py)."""

    kind = ""  # "domain" | "network"
    delete_first = True
    remove_hint = ""  # the virsh commands that remove one by hand ({name})

    def lookup(self, virsh: Virsh, name: str) -> tuple[str, bool] | None:
        raise NotImplementedError

    def make(self, virsh: Virsh, xml: str, name: str) -> None:
        """Define it (and start it, when nothing else does)."""
        raise NotImplementedError

    def remove(self, virsh: Virsh, name: str) -> None:
        raise NotImplementedError

    def _real(self, props: dict[str, Any]) -> tuple[str, bool] | None:
        return _looked_up(
            f"libvirt {self.kind} {props['name']}", lambda: self.lookup(Virsh(props["uri"]), props["name"])
        )

    def foreign(self, name: str, uuid: str) -> str:
        return (
            f"libvirt {self.kind} {name} (UUID {uuid}) exists and is not this stack's: another checkout "
            f"with the same stack name, or something made by hand. This stack leaves it alone: destroy the "
            f"stack that made it, or remove it ({self.remove_hint.format(name=name)}), or use another stack name"
        )

    def ownership_failures(self, olds: dict[str, Any], news: dict[str, Any]) -> list[CheckFailure]:
        """At preview, before anything is created: a same-named object that is not ours is refused."""
        if not _known(news.get("name")):
            return []
        try:
            real = self.lookup(Virsh(news["uri"]), news["name"])
        except LibvirtUnknown as e:
            return [CheckFailure("name", f"cannot tell whether libvirt {self.kind} {news['name']} exists ({e})")]
        if real is None or real[0] == olds.get("uuid"):
            return []
        owner = news.get("owner")
        if _known(owner) and ownership.is_owned(real[0], owner, news["name"]):
            return []  # ours: a leftover of an interrupted run, replaced at create
        return [CheckFailure("name", self.foreign(news["name"], real[0]))]

    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        failures = libvirt_failures(news["uri"])
        if not failures:
            failures = self.ownership_failures(olds, news)
        return CheckResult(news, failures)

    def create(self, props: dict[str, Any]) -> CreateResult:
        virsh, name, owner = Virsh(props["uri"]), props["name"], props["owner"]
        real = self._real(props)
        if real is not None:
            if not ownership.is_owned(real[0], owner, name):
                raise runtime.LabFailure(self.foreign(name, real[0]))
            runtime.log(f"{self.kind} {name}: removing this stack's leftover (UUID {real[0]}) before creating it")
            self.remove(virsh, name)
        uuid = ownership.new_uuid(owner, name)
        self.make(virsh, ownership.with_uuid(props["xml"], uuid), name)
        return CreateResult(id_=name, outs={**props, "uuid": uuid, "run_token": ownership.generation()})

    def drift(self, olds: dict[str, Any]) -> list[str]:
        real = self._real(olds)
        if real is None or real[0] != olds.get("uuid") or "run_token" not in olds:
            what = "is missing" if real is None else f"is another object now (UUID {real[0]})"
            _drift_note(f"{self.kind} {olds['name']} {what} on the host: it will be created again")
            return ["uuid"]
        if not real[1]:
            _drift_note(f"{self.kind} {olds['name']} is not running on the host: it will be created again")
            return ["running"]
        return []

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        name = props["name"]
        real = self._real(props)
        if real is None:
            return
        if "uuid" not in props or real[0] == props["uuid"]:  # no uuid: made before ownership markers
            self.remove(Virsh(props["uri"]), name)
        else:
            runtime.log(
                f"{self.kind} {name}: the one on the host (UUID {real[0]}) is not the one this resource made: left alone"
            )

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        real = self._real(props)
        if real is None or real[0] != props.get("uuid"):
            return ReadResult("", {})  # refresh: gone from the host, so gone from the state
        return ReadResult(id_, {**props, "running": real[1]})


# ---- network -----------------------------------------------------------------------------------


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


class LibvirtNetwork(Resource, module="l2dsr", name="Network"):
    name: pulumi.Output[str]
    run_token: pulumi.Output[str]  # new whenever it is created: domains attach to it anew

    def __init__(
        self,
        resource_name: str,
        *,
        uri: str,
        name: str,
        xml: str,
        host_addresses: list[tuple[str, int]],
        owner: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ):
        props = {
            "uri": uri,
            "name": name,
            "xml": xml,
            "host_addresses": [list(a) for a in host_addresses],
            "owner": owner,
            **dict.fromkeys(("uuid", "running", "run_token")),
        }
        # delete-first even for `pulumi up --replace`, which does not ask the provider
        super().__init__(NetworkProvider(), resource_name, props, _opts(opts, delete_before_replace=True))


# ---- volumes -----------------------------------------------------------------------------------


def _virtual_size(path: str) -> int:
    out = subprocess.run(
        ["qemu-img", "info", "--output", "json", "-U", path], capture_output=True, text=True, check=True
    )
    return int(json.loads(out.stdout)["virtual-size"])


class VolumeBase(ReplaceOnChange):
    """A volume named `<stem>-<generation>.<ext>`, a new name per creation: a replacement never
    touches the volume it replaces until that one is deleted by its own recorded name."""

    def fill(self, virsh: Virsh, props: dict[str, Any], name: str) -> None:
        raise NotImplementedError

    def create(self, props: dict[str, Any]) -> CreateResult:
        virsh, pool = Virsh(props["uri"]), props["pool"]
        name = ownership.volume_name(props["stem"], props["ext"], ownership.generation())
        try:
            self.fill(virsh, props, name)
        except (VirshError, OSError, subprocess.CalledProcessError):
            _looked_up(f"volume {name}", lambda: virsh.volume_delete(pool, name))  # nothing half-built stays
            raise
        return CreateResult(id_=f"{pool}/{name}", outs={**props, "name": name, "path": virsh.volume_path(pool, name)})

    def _exists(self, props: dict[str, Any]) -> bool:
        virsh = Virsh(props["uri"])
        return _looked_up(f"volume {props['name']}", lambda: virsh.volume_exists(props["pool"], props["name"]))

    def drift(self, olds: dict[str, Any]) -> list[str]:
        if self._exists(olds):
            return []
        _drift_note(f"volume {olds['name']} is missing from pool {olds['pool']}: it will be created again")
        return ["name"]

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        virsh = Virsh(props["uri"])
        _looked_up(f"volume {props['name']}", lambda: virsh.volume_delete(props["pool"], props["name"]))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_, props) if self._exists(props) else ReadResult("", {})


class VolumeProvider(VolumeBase):
    """A base volume uploaded from a file on this host, or a qcow2 overlay on another volume."""

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        failures = libvirt_failures(news["uri"])
        if not failures and not Virsh(news["uri"]).ok("pool-info", news["pool"]):
            failures.append(
                CheckFailure(
                    "pool", f"no libvirt storage pool {news['pool']!r}: run ./labctl setup or set l2dsr:storagePool"
                )
            )
        source = news.get("source")
        if source and not os.path.isfile(source):
            failures.append(CheckFailure("source", f"base image {source} does not exist: fix l2dsr:image"))
        return CheckResult(news, failures)

    def fill(self, virsh: Virsh, props: dict[str, Any], name: str) -> None:
        from virt.xml import volume_xml

        pool = props["pool"]
        if props.get("source"):
            source = props["source"]
            virsh.volume_create(pool, volume_xml(name, size_of(source), "qcow2"))
            virsh.volume_upload(pool, name, source)
        else:
            backing = props["backing_path"]
            virsh.volume_create(pool, volume_xml(name, _virtual_size(backing), "qcow2", backing_path=backing))


class LibvirtVolume(Resource, module="l2dsr", name="Volume"):
    path: pulumi.Output[str]
    name: pulumi.Output[str]

    def __init__(
        self,
        resource_name: str,
        *,
        uri: str,
        pool: str,
        stem: str,
        source: str = "",
        source_key: str = "",
        backing_path: pulumi.Input[str] = "",
        config_hash: pulumi.Input[str] = "",
        opts: pulumi.ResourceOptions | None = None,
    ):
        props = {
            "uri": uri,
            "pool": pool,
            "stem": stem,
            "ext": "qcow2",
            "source": source,
            "source_key": source_key,
            "backing_path": backing_path,
            "config_hash": config_hash,  # what the guest's cloud-init gets: a change means a fresh disk
            "name": None,
            "path": None,
        }
        super().__init__(VolumeProvider(), resource_name, props, opts)


# ---- cloud-init seed disk ------------------------------------------------------------------------


def seed_iso(user_data: str, meta_data: str, network_config: str, out: Path) -> None:
    """A NoCloud seed: an ISO 9660 volume labelled cidata (genisoimage, as cloud-init documents)."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in (("user-data", user_data), ("meta-data", meta_data), ("network-config", network_config)):
            Path(tmp, name).write_text(text)
        subprocess.run(
            [
                "genisoimage",
                "-quiet",
                "-output",
                str(out),
                "-volid",
                "cidata",
                "-joliet",
                "-rock",
                "user-data",
                "meta-data",
                "network-config",
            ],
            cwd=tmp,
            check=True,
            capture_output=True,
        )


class CloudInitDiskProvider(VolumeBase):
    def fill(self, virsh: Virsh, props: dict[str, Any], name: str) -> None:
        from virt.xml import volume_xml

        with tempfile.TemporaryDirectory() as tmp:
            iso = Path(tmp) / "seed.iso"
            seed_iso(props["user_data"], props["meta_data"], props["network_config"], iso)
            virsh.volume_create(props["pool"], volume_xml(name, size_of(str(iso)), "raw"))
            virsh.volume_upload(props["pool"], name, str(iso))


class CloudInitDisk(Resource, module="l2dsr", name="CloudInitDisk"):
    name: pulumi.Output[str]

    def __init__(
        self,
        resource_name: str,
        *,
        uri: str,
        pool: str,
        stem: str,
        user_data: pulumi.Input[str],
        meta_data: pulumi.Input[str],
        network_config: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ):
        props = {
            "uri": uri,
            "pool": pool,
            "stem": stem,
            "ext": "iso",
            "user_data": user_data,
            "meta_data": meta_data,
            "network_config": network_config,
            "name": None,
            "path": None,
        }
        super().__init__(CloudInitDiskProvider(), resource_name, props, opts)


def content_hash(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:10]


# ---- domain ------------------------------------------------------------------------------------


class DomainProvider(NamedObjectProvider):
    kind = "domain"
    remove_hint = "virsh destroy {name}; virsh undefine {name}"

    def lookup(self, virsh: Virsh, name: str) -> tuple[str, bool] | None:
        return virsh.domain(name)

    def make(self, virsh: Virsh, xml: str, name: str) -> None:
        virsh.with_xml("define", xml)  # started by its readiness, when a boot slot is free

    def remove(self, virsh: Virsh, name: str) -> None:
        virsh.domain_remove(name)


class LibvirtDomain(Resource, module="l2dsr", name="Domain"):
    name: pulumi.Output[str]
    run_token: pulumi.Output[str]  # new whenever it is created: readiness waits for the new boot

    def __init__(
        self,
        resource_name: str,
        *,
        uri: str,
        name: str,
        xml: pulumi.Input[str],
        owner: pulumi.Input[str],
        network_run: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ):
        props = {
            "uri": uri,
            "name": name,
            "xml": xml,
            "owner": owner,
            "network_run": network_run,  # a network created anew: the domain must attach to it anew
            **dict.fromkeys(("uuid", "running", "run_token")),
        }
        # delete-first even for `pulumi up --replace`, which does not ask the provider
        super().__init__(DomainProvider(), resource_name, props, _opts(opts, delete_before_replace=True))


# ---- readiness ---------------------------------------------------------------------------------


class ReadinessProvider(ReplaceOnChange):
    """Waits until a VM's cloud-init is done (virt/readiness.py); its outputs are the boot's facts.

    A domain created or started anew (its run token) means a new wait, and a new boot id, which in
    turn reruns the benchmark: results always describe the VMs that exist.
    """

    not_compared = ("lab_vcpus", "boot_slots")

    def create(self, props: dict[str, Any]) -> CreateResult:
        from bench.ssh import KeyFile, Ssh
        from virt.readiness import BootingGuest, boot, boot_budget_s, default_boot_slots

        virsh = Virsh(props["uri"])
        guest = BootingGuest(**props["guest"])
        node = virsh.nodeinfo()
        cpus = node[0] if node else os.cpu_count() or 1
        slots = int(props["boot_slots"]) or default_boot_slots(cpus)
        # A boot shares the cores with the other boots in progress (at most the slots).
        booting_vcpus = min(int(props["lab_vcpus"]), slots * int(props["vcpus"]))
        budget = boot_budget_s(props["domain_type"], booting_vcpus, cpus)
        with KeyFile(props["private_key"]) as key:
            ready = boot(guest, Ssh(props["login_user"], key), virsh, budget, props["group"], slots)
        return CreateResult(id_=f"{guest.domain}/{ready.boot_id}", outs={**props, **ready.as_dict()})

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        pass  # a wait leaves nothing behind


class VmReady(Resource, module="l2dsr", name="VmReady"):
    seconds: pulumi.Output[float]
    boot_id: pulumi.Output[str]
    memory_available_mib: pulumi.Output[int]
    memory_total_mib: pulumi.Output[int]
    resets: pulumi.Output[int]
    cpu_seconds: pulumi.Output[float]
    waited_s: pulumi.Output[float]

    def __init__(
        self,
        resource_name: str,
        *,
        uri: str,
        domain_type: str,
        guest: dict[str, str],
        run_token: pulumi.Input[str],
        group: str,
        vcpus: int,
        lab_vcpus: int,
        boot_slots: int,
        login_user: str,
        private_key: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ):
        props = {
            "uri": uri,
            "domain_type": domain_type,
            "guest": guest,
            "run_token": run_token,
            "group": group,
            "vcpus": vcpus,
            "lab_vcpus": lab_vcpus,
            "boot_slots": boot_slots,  # guests booting at once on the host; 0: one per host CPU
            "login_user": login_user,
            "private_key": private_key,
            **dict.fromkeys(
                ("seconds", "boot_id", "memory_available_mib", "memory_total_mib", "resets", "cpu_seconds", "waited_s")
            ),
        }
        super().__init__(ReadinessProvider(), resource_name, props, opts)


# ---- SSH key -----------------------------------------------------------------------------------


class SshKeyProvider(ResourceProvider):
    """An ed25519 key pair made once per stack; the private half is a secret in the state."""

    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        with tempfile.TemporaryDirectory() as tmp:
            key = Path(tmp) / "id"
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", props["comment"], "-f", str(key)],
                check=True,
                capture_output=True,
            )
            outs = {
                **props,
                "public_key": (key.with_suffix(".pub")).read_text().strip(),
                "private_key": key.read_text(),
            }
        return CreateResult(id_=props["comment"], outs=outs)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_, props)


class SshKey(Resource, module="l2dsr", name="SshKey"):
    public_key: pulumi.Output[str]
    private_key: pulumi.Output[str]

    def __init__(self, resource_name: str, *, comment: str, opts: pulumi.ResourceOptions | None = None):
        props = {"comment": comment, "public_key": None, "private_key": None}
        super().__init__(SshKeyProvider(), resource_name, props, _opts(opts, additional_secret_outputs=["private_key"]))
