"""Volumes (pulumi-libvirt's `Volume` and `CloudInitDisk`): the shared base, each VM's overlay, its seed.

A volume is named `<stem>-<generation>.<ext>`, a new name per creation: a replacement never touches
the volume it replaces until that one is deleted by its own recorded name, so volumes are replaced
create-first.

No volume is orphaned by a kill: a create writes its volume's name to a journal of its own
(`~/.cache/l2dsr/in-flight/`) before it makes the volume, and the entry stays until the state is
seen to hold that volume: the engine's next diff (or read) of the resource, with the volume's name
in its recorded outputs, or its delete, removes the entry. A create's return is not enough: a
kill -9 of the engine between the provider's answer and the engine's checkpoint loses the result
(seen in CI: an initrd and a seed ISO orphaned by a kill during the boots). The engine diffs every
recorded resource before it creates any, so an entry still there when the same resource is created
again names a volume no state holds, and that create removes it first.

Where ours differ from pulumi-libvirt's: a volume names its source file or backing
path directly (no `base_volume_id` lookup), and carries `config_hash`, what the guest's cloud-init
gets, so a change to it means a fresh disk; the seed ISO is built here with genisoimage.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, ReadResult

from resources.base import Declared, ReplaceOnChange, drift_note, libvirt_failures, looked_up
from runtime.hostfacts import RecordUnreadable, atomic_write, in_flight_dir, read_json
from virt import ownership
from virt.virsh import Virsh, VirshError, size_of
from virt.xml import volume_xml


@dataclass(frozen=True)
class VolumeOutputs:
    name: str  # <stem>-<generation>.<ext>
    path: str


@dataclass(frozen=True)
class VolumeArgs:
    uri: str
    pool: str
    stem: str
    ext: str = "qcow2"
    source: str = ""  # a file on this machine to upload (the base image, its kernel and initrd), qcow2 or raw by ext
    source_key: str = ""  # what the source is (the image's key or URL): a new one means a new volume
    backing_path: pulumi.Input[str] = ""  # or an overlay on this volume
    config_hash: pulumi.Input[str] = ""  # what the guest's cloud-init gets: a change means a fresh disk


@dataclass(frozen=True)
class CloudInitDiskArgs:
    uri: str
    pool: str
    stem: str
    user_data: pulumi.Input[str]
    meta_data: pulumi.Input[str]
    network_config: pulumi.Input[str]
    ext: str = "iso"


def content_hash(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:10]


class VolumeBase(ReplaceOnChange):
    """A volume with a fresh name per creation, deleted by its recorded name."""

    def fill(self, virsh: Virsh, props: dict[str, Any], name: str) -> None:
        raise NotImplementedError

    def create(self, props: dict[str, Any]) -> CreateResult:
        virsh, pool = Virsh(props["uri"]), props["pool"]
        journal = in_flight(props)
        remove_interrupted(virsh, journal)
        name = ownership.volume_name(props["stem"], props["ext"], ownership.generation())
        atomic_write(journal, json.dumps({"uri": props["uri"], "pool": pool, "name": name}))
        try:
            self.fill(virsh, props, name)
        except (VirshError, OSError, subprocess.CalledProcessError):
            looked_up(f"volume {name}", lambda: virsh.volume_delete(pool, name))  # nothing half-built stays
            journal.unlink(missing_ok=True)
            raise
        path = virsh.volume_path(pool, name)  # the entry stays: only the state, seen later, confirms it
        return CreateResult(id_=f"{pool}/{name}", outs={**props, "name": name, "path": path})

    def diff(self, id_: str, olds: dict[str, Any], news: dict[str, Any]):
        confirmed(olds)  # the engine diffs what its state records: this volume is held
        return super().diff(id_, olds, news)

    def _exists(self, props: dict[str, Any]) -> bool:
        virsh = Virsh(props["uri"])
        return looked_up(f"volume {props['name']}", lambda: virsh.volume_exists(props["pool"], props["name"]))

    def drift(self, olds: dict[str, Any]) -> list[str]:
        if self._exists(olds):
            return []
        drift_note(f"volume {olds['name']} is missing from pool {olds['pool']}: it will be created again")
        return ["name"]

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        virsh = Virsh(props["uri"])
        looked_up(f"volume {props['name']}", lambda: virsh.volume_delete(props["pool"], props["name"]))
        confirmed(props)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        confirmed(props)
        return ReadResult(id_, props) if self._exists(props) else ReadResult("", {})


def in_flight(props: dict[str, Any]) -> Path:
    """The journal entry of a create of this resource (its stack's state, host, pool and stem)."""
    key = content_hash(ownership.state_url(), props["uri"], props["pool"], props["stem"], props["ext"])
    return in_flight_dir() / f"{props['stem']}-{key}.json"


def confirmed(olds: dict[str, Any]) -> None:
    """The state holds this volume (its recorded outputs name it): its journal entry goes."""
    if not all(k in olds for k in ("name", "uri", "pool", "stem", "ext")):
        return
    journal = in_flight(olds)
    try:
        entry = read_json(journal, "a volume create's journal entry", "it is removed") if journal.exists() else None
    except RecordUnreadable:
        entry = None
    if entry and entry.get("name") == olds["name"]:
        journal.unlink(missing_ok=True)


def remove_interrupted(virsh: Virsh, journal: Path) -> None:
    """Remove the volume an earlier create of this resource made and never returned (see the module)."""
    if not journal.exists():
        return
    try:
        entry = read_json(journal, "a volume create's journal entry", "it is removed")
    except RecordUnreadable:  # written whole or not at all: only a hand-edited one gets here
        entry = None
    if entry:
        pool, name = entry["pool"], entry["name"]
        if looked_up(f"volume {name}", lambda: virsh.volume_exists(pool, name)):
            looked_up(f"volume {name}", lambda: virsh.volume_delete(pool, name))
            drift_note(f"removed volume {name}: an earlier create of it was interrupted before any state named it")
    journal.unlink(missing_ok=True)


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
        pool = props["pool"]
        if props.get("source"):
            source = props["source"]
            virsh.volume_create(pool, volume_xml(name, size_of(source), "qcow2" if props["ext"] == "qcow2" else "raw"))
            virsh.volume_upload(pool, name, source)
        else:
            backing = props["backing_path"]
            # Its size from libvirt: the backing volume is on the VM's host, which may not be this machine.
            virsh.volume_create(pool, volume_xml(name, virsh.volume_capacity(backing), "qcow2", backing_path=backing))


def seed_iso(user_data: str, meta_data: str, network_config: str, out: Path) -> None:
    """A NoCloud seed: an ISO 9660 volume labelled cidata (genisoimage, as cloud-init documents)."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in (("user-data", user_data), ("meta-data", meta_data), ("network-config", network_config)):
            Path(tmp, name).write_text(text)
        subprocess.run(
            ["genisoimage", "-quiet", "-output", str(out), "-volid", "cidata", "-joliet", "-rock"]
            + ["user-data", "meta-data", "network-config"],
            cwd=tmp,
            check=True,
            capture_output=True,
        )


class CloudInitDiskProvider(VolumeBase):
    def fill(self, virsh: Virsh, props: dict[str, Any], name: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            iso = Path(tmp) / "seed.iso"
            seed_iso(props["user_data"], props["meta_data"], props["network_config"], iso)
            virsh.volume_create(props["pool"], volume_xml(name, size_of(str(iso)), "raw"))
            virsh.volume_upload(props["pool"], name, str(iso))


class Volume(Declared, module="l2dsr", name="Volume"):
    Args = VolumeArgs
    Outputs = VolumeOutputs
    provider = VolumeProvider

    name: pulumi.Output[str]
    path: pulumi.Output[str]


class CloudInitDisk(Declared, module="l2dsr", name="CloudInitDisk"):
    Args = CloudInitDiskArgs
    Outputs = VolumeOutputs
    provider = CloudInitDiskProvider

    name: pulumi.Output[str]
