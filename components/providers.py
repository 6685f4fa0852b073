"""The lab's libvirt resources as Pulumi dynamic providers (network, volume, seed disk, domain, key).

Why not pulumi-libvirt: its Go module (and terraform-provider-libvirt's) is not served by the
module proxy these machines reach, and upstream has deprecated it. The lab needs five small
resources; each is a few `virsh` calls, and the XML it sends is rendered in virt/xml.py.

Every resource here is replaced, never updated in place, when an input changes; names are stable,
so the old one is deleted first. The provider code runs in the pulumi-python provider process,
which imports this module by name (PYTHONPATH is the project root).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, DiffResult, ReadResult, Resource, ResourceProvider

from virt.virsh import Virsh, VirshError, size_of

PROVIDER_KEY = "__provider"


class ReplaceOnChange(ResourceProvider):
    """Any input change replaces the resource (deleting the old one first: names are stable)."""

    serialize_as_secret_always = False
    delete_first = True  # stable names: the old one must go before the new one can take its name
    not_compared: tuple[str, ...] = ()  # inputs that never cause a replacement

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = sorted(
            k for k in news if k != PROVIDER_KEY and k not in self.not_compared and olds.get(k) != news.get(k)
        )
        return DiffResult(changes=bool(changed), replaces=changed, delete_before_replace=self.delete_first)


def _opts(opts: pulumi.ResourceOptions | None, **extra: Any) -> pulumi.ResourceOptions:
    return pulumi.ResourceOptions.merge(opts or pulumi.ResourceOptions(), pulumi.ResourceOptions(**extra))


# ---- network -----------------------------------------------------------------------------------


def subnet_collisions(ours: list[str], networks_xml: dict[str, str], our_name: str) -> list[str]:
    """Other libvirt networks on this host that hold one of our subnets' host addresses."""
    found = []
    for name, xml in networks_xml.items():
        if name == our_name:
            continue
        for address in ours:
            if f"address='{address}'" in xml or f'address="{address}"' in xml:
                found.append(f"libvirt network {name} already holds {address}")
    return found


def libvirt_failures(uri: str) -> list[CheckFailure]:
    try:
        Virsh(uri).run("version", timeout=30)
    except VirshError as e:
        return [
            CheckFailure("uri", f"libvirt at {uri} does not answer ({e}); run ./labctl setup or fix l2dsr:libvirtUri")
        ]
    return []


class NetworkProvider(ReplaceOnChange):
    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        """At preview and before anything is created: libvirt answers, and no other stack holds our subnets."""
        failures = libvirt_failures(news["uri"])
        if not failures:
            clashes = subnet_collisions(
                [a for a, _ in news["host_addresses"]], Virsh(news["uri"]).networks_xml(), news["name"]
            )
            if clashes:
                failures.append(
                    CheckFailure(
                        "host_addresses",
                        "this stack's subnets are taken on this libvirt host (" + "; ".join(clashes) + "): another "
                        "stack is probably up. Destroy it first, or give this stack other l2dsr:frontSubnet and "
                        "l2dsr:serverSubnet values",
                    )
                )
        return CheckResult(news, failures)

    def create(self, props: dict[str, Any]) -> CreateResult:
        virsh = Virsh(props["uri"])
        virsh.network_ensure(props["name"], props["xml"])
        return CreateResult(id_=props["name"], outs=props)

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        Virsh(props["uri"]).network_delete(props["name"])


class LibvirtNetwork(Resource, module="l2dsr", name="Network"):
    name: pulumi.Output[str]

    def __init__(
        self,
        resource_name: str,
        *,
        uri: str,
        name: str,
        xml: str,
        host_addresses: list[tuple[str, int]],
        opts: pulumi.ResourceOptions | None = None,
    ):
        props = {"uri": uri, "name": name, "xml": xml, "host_addresses": [list(a) for a in host_addresses]}
        super().__init__(NetworkProvider(), resource_name, props, opts)


# ---- volumes -----------------------------------------------------------------------------------


def _virtual_size(path: str) -> int:
    out = subprocess.run(
        ["qemu-img", "info", "--output", "json", "-U", path], capture_output=True, text=True, check=True
    )
    return int(json.loads(out.stdout)["virtual-size"])


class VolumeProvider(ReplaceOnChange):
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

    def create(self, props: dict[str, Any]) -> CreateResult:
        from virt.xml import volume_xml

        virsh, pool, name = Virsh(props["uri"]), props["pool"], props["name"]
        virsh.volume_delete(pool, name)  # a leftover of an interrupted run under our name
        if props.get("source"):
            source = props["source"]
            virsh.volume_create(pool, volume_xml(name, size_of(source), "qcow2"))
            try:
                virsh.volume_upload(pool, name, source)
            except VirshError:
                virsh.volume_delete(pool, name)
                raise
        else:
            backing = props["backing_path"]
            virsh.volume_create(pool, volume_xml(name, _virtual_size(backing), "qcow2", backing_path=backing))
        return CreateResult(id_=f"{pool}/{name}", outs={**props, "path": virsh.volume_path(pool, name)})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        Virsh(props["uri"]).volume_delete(props["pool"], props["name"])


class BaseVolumeProvider(VolumeProvider):
    """The base's name carries the image key: a new image is created beside the old one, and the
    overlays move to it (they are replaced, as their backing path changed) before the old one goes."""

    delete_first = False


class LibvirtVolume(Resource, module="l2dsr", name="Volume"):
    path: pulumi.Output[str]
    name: pulumi.Output[str]

    def __init__(
        self,
        resource_name: str,
        *,
        uri: str,
        pool: str,
        name: str,
        source: str = "",
        source_key: str = "",
        backing_path: pulumi.Input[str] = "",
        generation: pulumi.Input[str] = "",
        opts: pulumi.ResourceOptions | None = None,
    ):
        props = {
            "uri": uri,
            "pool": pool,
            "name": name,
            "source": source,
            "source_key": source_key,
            "backing_path": backing_path,
            "generation": generation,
            "path": None,
        }
        provider = BaseVolumeProvider() if source else VolumeProvider()
        super().__init__(provider, resource_name, props, opts)


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


class CloudInitDiskProvider(ReplaceOnChange):
    def create(self, props: dict[str, Any]) -> CreateResult:
        from virt.xml import volume_xml

        virsh, pool, name = Virsh(props["uri"]), props["pool"], props["name"]
        virsh.volume_delete(pool, name)
        with tempfile.TemporaryDirectory() as tmp:
            iso = Path(tmp) / "seed.iso"
            seed_iso(props["user_data"], props["meta_data"], props["network_config"], iso)
            virsh.volume_create(pool, volume_xml(name, size_of(str(iso)), "raw"))
            virsh.volume_upload(pool, name, str(iso))
        return CreateResult(id_=f"{pool}/{name}", outs=props)

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        Virsh(props["uri"]).volume_delete(props["pool"], props["name"])


class CloudInitDisk(Resource, module="l2dsr", name="CloudInitDisk"):
    name: pulumi.Output[str]

    def __init__(
        self,
        resource_name: str,
        *,
        uri: str,
        pool: str,
        name: pulumi.Input[str],
        user_data: pulumi.Input[str],
        meta_data: pulumi.Input[str],
        network_config: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ):
        props = {
            "uri": uri,
            "pool": pool,
            "name": name,
            "user_data": user_data,
            "meta_data": meta_data,
            "network_config": network_config,
        }
        super().__init__(CloudInitDiskProvider(), resource_name, props, opts)


def content_hash(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:10]


# ---- domain ------------------------------------------------------------------------------------


class DomainProvider(ReplaceOnChange):
    def create(self, props: dict[str, Any]) -> CreateResult:
        virsh = Virsh(props["uri"])
        virsh.domain_delete(props["name"])  # a leftover of an interrupted run under our name
        virsh.domain_create(props["xml"], props["name"])
        return CreateResult(id_=props["name"], outs=props)

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        Virsh(props["uri"]).domain_delete(props["name"])


class LibvirtDomain(Resource, module="l2dsr", name="Domain"):
    name: pulumi.Output[str]

    def __init__(
        self,
        resource_name: str,
        *,
        uri: str,
        name: str,
        xml: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__(DomainProvider(), resource_name, {"uri": uri, "name": name, "xml": xml}, opts)


# ---- readiness ---------------------------------------------------------------------------------


class ReadinessProvider(ReplaceOnChange):
    """Waits until a VM's cloud-init is done (virt/readiness.py); its outputs are the boot's facts.

    A new domain (any replacement changes its XML) means a new wait, and a new boot id, which in
    turn reruns the benchmark: results always describe the VMs that exist.
    """

    delete_first = False  # nothing on the host carries its name
    not_compared = ("lab_vcpus",)

    def create(self, props: dict[str, Any]) -> CreateResult:
        from bench.ssh import KeyFile, Ssh
        from virt.readiness import Guest, boot_budget_s, running_vcpus, wait_ready

        virsh = Virsh(props["uri"])
        guest = Guest(**props["guest"])
        vcpus = max(int(props["lab_vcpus"]), running_vcpus(virsh))
        budget = boot_budget_s(props["domain_type"], vcpus, os.cpu_count() or 1)
        with KeyFile(props["private_key"]) as key:
            ready = wait_ready(guest, Ssh(props["login_user"], key), virsh, budget, group=props["group"])
        return CreateResult(id_=f"{guest.domain}/{ready.boot_id}", outs={**props, **ready.as_dict()})

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        pass  # a wait leaves nothing behind


class VmReady(Resource, module="l2dsr", name="VmReady"):
    seconds: pulumi.Output[float]
    boot_id: pulumi.Output[str]
    memory_available_mib: pulumi.Output[int]
    memory_total_mib: pulumi.Output[int]
    resets: pulumi.Output[int]

    def __init__(
        self,
        resource_name: str,
        *,
        uri: str,
        domain_type: str,
        guest: dict[str, str],
        domain_xml: pulumi.Input[str],
        group: str,
        lab_vcpus: int,
        login_user: str,
        private_key: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ):
        props = {
            "uri": uri,
            "domain_type": domain_type,
            "guest": guest,
            "domain_xml_hash": pulumi.Output.from_input(domain_xml).apply(lambda x: content_hash(x)),
            "group": group,
            "lab_vcpus": lab_vcpus,
            "login_user": login_user,
            "private_key": private_key,
            **dict.fromkeys(("seconds", "boot_id", "memory_available_mib", "memory_total_mib", "resets")),
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


def cached_url(url: str, cache: Path) -> str:
    """A cloud image URL, downloaded once into the cache (keyed by URL); returns the local path."""
    import urllib.request

    target = cache / "downloads" / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{os.path.basename(url)}"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".partial")
        urllib.request.urlretrieve(url, tmp)  # noqa: S310 (the user's configured image URL)
        tmp.rename(target)
    return str(target)
