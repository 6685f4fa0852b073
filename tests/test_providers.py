"""Every provider's create, diff, read, update and delete against a fake `virsh` (tests/fakes/virsh):
ownership, safe replacement, drift, and libvirt not answering. No libvirtd, no engine."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import runtime
from resolution import Configured
from resources.domain import DomainProvider
from resources.network import NetworkProvider
from resources.volume import VolumeProvider
from virt import ownership
from virt.virsh import LibvirtUnknown, Virsh

FAKES = Path(__file__).resolve().parent / "fakes"
URI = "test:///fake"
OWNER = "l2dsr/lab/0123456789abcdef"
OTHER = "l2dsr/lab/fedcba9876543210"  # another checkout's stack of the same name


class FakeLibvirt:
    """The fake libvirt's state file: what exists, and every virsh call made."""

    def __init__(self, path: Path):
        self.path = path
        self.write({"domains": {}, "networks": {}, "volumes": {"default": []}, "calls": [], "mode": "up"})

    def read(self) -> dict:
        return json.loads(self.path.read_text())

    def write(self, state: dict) -> None:
        self.path.write_text(json.dumps(state))

    def set(self, **changes) -> None:
        self.write({**self.read(), **changes})

    def calls(self) -> list[str]:
        return [args[0] for args in self.read()["calls"]]

    def changing_calls(self) -> list[str]:
        readonly = {
            "version",
            "list",
            "domstate",
            "domuuid",
            "net-list",
            "net-info",
            "net-uuid",
            "net-dumpxml",
            "vol-list",
            "vol-path",
            "pool-info",
        }
        return [c for c in self.calls() if c not in readonly]

    def clear_calls(self) -> None:
        self.set(calls=[])

    def boot(self, domain: str = "l2dsr-lab-web01") -> None:
        """What the domain's readiness does when its boot slot is free (virt/readiness.py boot)."""
        Virsh(URI).run("start", domain)


@pytest.fixture
def host(tmp_path, monkeypatch) -> FakeLibvirt:
    monkeypatch.setenv("FAKE_VIRSH_STATE", str(tmp_path / "libvirt.json"))
    monkeypatch.setenv("L2DSR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", f"{FAKES}{os.pathsep}{os.environ['PATH']}")
    return FakeLibvirt(tmp_path / "libvirt.json")


def domain_props(name: str = "l2dsr-lab-web01", owner: str = OWNER, memory: int = 512) -> dict:
    xml = f"<domain type='qemu'>\n  <name>{name}</name>\n  <memory unit='MiB'>{memory}</memory>\n</domain>\n"
    return {"uri": URI, "name": name, "xml": xml, "owner": owner}


NET_XML = "<network>\n  <name>l2dsr-lab</name>\n  <ip address='192.168.16.1' prefix='24'/>\n</network>\n"


def network_props(owner: str = OWNER) -> dict:
    return {"uri": URI, "name": "l2dsr-lab", "xml": NET_XML, "host_addresses": [["192.168.16.1", 24]], "owner": owner}


# ---- domains -------------------------------------------------------------------------------------


def test_a_created_domain_carries_the_stacks_mark_and_waits_for_its_boot_slot(host):
    outs = DomainProvider().create(domain_props()).outs
    real = host.read()["domains"]["l2dsr-lab-web01"]
    assert real == {"uuid": outs["uuid"], "running": False}  # its readiness starts it
    assert ownership.is_owned(outs["uuid"], OWNER, "l2dsr-lab-web01")
    assert not ownership.is_owned(outs["uuid"], OTHER, "l2dsr-lab-web01")
    assert host.changing_calls() == ["define"]


def test_a_replacement_created_first_survives_the_delete_of_the_old_one(host):
    """`pulumi up --replace` without delete-first: create the new one, then delete "the old one"."""
    provider = DomainProvider()
    old = provider.create(domain_props()).outs
    new = provider.create(domain_props()).outs  # takes the name: the old one (ours) is removed first
    provider.delete("l2dsr-lab-web01", old)
    assert host.read()["domains"]["l2dsr-lab-web01"]["uuid"] == new["uuid"] != old["uuid"]
    provider.delete("l2dsr-lab-web01", new)
    assert host.read()["domains"] == {}


def test_a_foreign_domain_of_our_name_is_refused_at_preview_and_never_touched(host):
    DomainProvider().create(domain_props(owner=OTHER))  # the other checkout's VM
    host.boot()
    host.clear_calls()
    failures = DomainProvider().check({}, domain_props()).failures
    assert len(failures) == 1 and failures[0].property == "name"
    assert "libvirt domain l2dsr-lab-web01" in failures[0].reason
    assert "is not this stack's" in failures[0].reason and "virsh destroy l2dsr-lab-web01" in failures[0].reason
    with pytest.raises(runtime.LabFailure, match="is not this stack's"):
        DomainProvider().create(domain_props())
    assert host.changing_calls() == []
    assert host.read()["domains"]["l2dsr-lab-web01"]["running"]


def test_a_first_preview_refuses_any_same_named_domain(host):
    """A new stack's identity is not known at its first preview: nothing on the host can be its own."""
    DomainProvider().create(domain_props(owner=OTHER))
    assert DomainProvider().check({}, {**domain_props(), "owner": "04da6b54-80e4-46f7-96ec-b56ff0331ba9"}).failures


def test_a_paused_domain_is_drift_not_running(host):
    """A `kill-web` fault run killed before its resume leaves the web paused: the next preview says so."""
    outs = DomainProvider().create(domain_props()).outs
    host.boot()
    assert DomainProvider().drift(outs) == []
    state = host.read()
    state["domains"]["l2dsr-lab-web01"]["paused"] = True
    host.write(state)
    assert DomainProvider().drift(outs) == ["running"]


def test_our_leftover_is_replaced_at_create(host):
    DomainProvider().create(domain_props())  # e.g. an interrupted up: on the host, not in the state
    assert DomainProvider().check({}, domain_props()).failures == []
    outs = DomainProvider().create(domain_props()).outs
    assert host.read()["domains"]["l2dsr-lab-web01"]["uuid"] == outs["uuid"]


def test_a_domain_removed_by_hand_is_planned_again(host):
    provider = DomainProvider()
    outs = provider.create(domain_props()).outs
    host.boot()
    assert provider.diff("x", outs, domain_props()).changes is False
    host.set(domains={})
    diff = provider.diff("x", outs, domain_props())
    assert diff.changes and diff.replaces == ["uuid"] and diff.delete_before_replace
    assert provider.read("l2dsr-lab-web01", outs).id == ""  # refresh drops it from the state
    provider.delete("l2dsr-lab-web01", outs)  # the replacement's delete: nothing to remove, no error


def test_a_stopped_domain_is_created_again_as_a_new_run(host):
    """Replaced, not started in place: a preview then shows what follows (its readiness, the benchmark)."""
    provider = DomainProvider()
    outs = provider.create(domain_props()).outs
    host.boot()
    assert provider.diff("x", outs, domain_props()).changes is False
    state = host.read()
    state["domains"]["l2dsr-lab-web01"]["running"] = False
    host.write(state)
    diff = provider.diff("x", outs, domain_props())
    assert diff.replaces == ["running"] and diff.delete_before_replace
    assert provider.read("l2dsr-lab-web01", outs).outs["running"] is False  # refresh shows it stopped
    provider.delete("l2dsr-lab-web01", outs)  # a stopped domain: destroy fails, undefine removes it
    again = provider.create(domain_props()).outs
    assert host.read()["domains"]["l2dsr-lab-web01"] == {"uuid": again["uuid"], "running": False}
    assert again["run_token"] != outs["run_token"]


def test_an_input_change_replaces_delete_first(host):
    provider = DomainProvider()
    outs = provider.create(domain_props()).outs
    diff = provider.diff("x", outs, domain_props(memory=1024))
    assert diff.replaces == ["xml"] and diff.delete_before_replace


def test_a_domain_made_before_ownership_marks_is_deleted_by_name(host):
    DomainProvider().create(domain_props())
    DomainProvider().delete("l2dsr-lab-web01", domain_props())  # state without a uuid
    assert host.read()["domains"] == {}


@pytest.mark.parametrize("mode", ["down", "fail:list"])
def test_libvirt_not_answering_fails_every_operation_and_drops_nothing(host, mode):
    provider = DomainProvider()
    outs = provider.create(domain_props()).outs
    host.set(mode=mode)
    for operation in (
        lambda: provider.delete("x", outs),
        lambda: provider.diff("x", outs, domain_props()),
        lambda: provider.read("x", outs),
        lambda: provider.create(domain_props()),
    ):
        with pytest.raises(runtime.LabFailure, match="cannot tell whether it exists"):
            operation()
    assert provider.check({}, domain_props()).failures
    host.set(mode="up")
    assert host.read()["domains"]["l2dsr-lab-web01"]["uuid"] == outs["uuid"]


def test_a_libvirt_that_hangs_is_unknown_within_the_timeout(host):
    host.set(mode="hang")
    with pytest.raises(LibvirtUnknown, match="did not answer within 1 s"):
        Virsh(URI).ask("list", "--all", "--name", timeout=1)


# ---- networks ------------------------------------------------------------------------------------


def test_network_lifecycle_ownership_and_drift(host):
    provider = NetworkProvider()
    assert provider.check({}, network_props()).failures == []
    outs = provider.create(network_props()).outs
    assert host.read()["networks"]["l2dsr-lab"]["running"]
    assert provider.check(outs, network_props()).failures == []  # our own network holds our subnets: fine
    state = host.read()
    state["networks"]["l2dsr-lab"]["running"] = False
    host.write(state)
    assert provider.diff("x", outs, network_props()).replaces == ["running"]
    host.set(networks={})
    assert provider.diff("x", outs, network_props()).replaces == ["uuid"]


def test_a_foreign_network_of_our_name_is_refused_not_adopted(host):
    NetworkProvider().create(network_props(owner=OTHER))
    host.clear_calls()
    failures = NetworkProvider().check({}, network_props()).failures
    assert [f.property for f in failures] == ["name"]
    assert "libvirt network l2dsr-lab" in failures[0].reason and "virsh net-undefine l2dsr-lab" in failures[0].reason
    with pytest.raises(runtime.LabFailure, match="not this stack's"):
        NetworkProvider().create(network_props())
    assert host.changing_calls() == []


def test_another_network_holding_our_subnet_is_refused(host):
    other = {**network_props(owner=OTHER), "name": "l2dsr-other", "xml": NET_XML.replace("l2dsr-lab", "l2dsr-other")}
    NetworkProvider().create(other)
    failures = NetworkProvider().check({}, network_props()).failures
    assert [f.property for f in failures] == ["host_addresses"]
    assert "libvirt network l2dsr-other already holds 192.168.16.1" in failures[0].reason


# ---- volumes -------------------------------------------------------------------------------------


def volume_props(source: Path) -> dict:
    return {
        "uri": URI,
        "pool": "default",
        "stem": "l2dsr-lab-base-abc",
        "ext": "qcow2",
        "source": str(source),
        "source_key": "k",
        "backing_path": "",
        "config_hash": "",
    }


def test_each_volume_creation_has_its_own_name_so_replacement_is_safe(host, tmp_path):
    source = tmp_path / "base.qcow2"
    source.write_bytes(b"\0" * 1024)
    provider = VolumeProvider()
    assert provider.check({}, volume_props(source)).failures == []
    old = provider.create(volume_props(source)).outs
    new = provider.create(volume_props(source)).outs  # a replacement, created first
    assert old["name"] != new["name"] and old["name"].startswith("l2dsr-lab-base-abc-")
    assert new["path"] == f"/pool/default/{new['name']}"
    provider.delete("x", old)
    assert host.read()["volumes"]["default"] == [new["name"]]
    assert provider.diff("x", new, volume_props(source)).changes is False
    host.set(volumes={"default": []})
    assert provider.diff("x", new, volume_props(source)).replaces == ["name"]
    assert provider.read("x", new).id == ""


def test_a_failed_upload_leaves_no_volume(host, tmp_path):
    source = tmp_path / "base.qcow2"
    source.write_bytes(b"\0" * 1024)
    host.set(mode="fail:vol-upload")
    with pytest.raises(Exception, match="vol-upload"):
        VolumeProvider().create(volume_props(source))
    host.set(mode="up")
    assert host.read()["volumes"]["default"] == []


class KilledProvider(VolumeProvider):
    """A create killed once its volume exists: nothing after that runs (SystemExit passes every handler
    the create has, as a kill -9 of the provider would leave it)."""

    def fill(self, virsh, props, name):
        super().fill(virsh, props, name)
        raise SystemExit(137)


def test_a_create_killed_midway_leaves_a_volume_the_next_create_removes(host, tmp_path):
    source = tmp_path / "base.qcow2"
    source.write_bytes(b"\0" * 1024)
    journal = tmp_path / "cache" / "in-flight"
    other = {**volume_props(source), "stem": "l2dsr-lab-web01-disk"}
    kept = VolumeProvider().create(other).outs  # another resource's volume, in the state
    with pytest.raises(SystemExit):
        KilledProvider().create(volume_props(source))
    (orphan,) = set(host.read()["volumes"]["default"]) - {kept["name"]}
    assert len(list(journal.iterdir())) == 2, "the journal names both volumes until a state is seen to hold them"
    new = VolumeProvider().create(volume_props(source)).outs  # the next `up` creates the resource again
    assert sorted(host.read()["volumes"]["default"]) == sorted([kept["name"], new["name"]]), orphan
    # the engine's next diff of each recorded resource confirms it; a replacement then removes nothing
    for outs, props in ((kept, other), (new, volume_props(source))):
        assert VolumeProvider().diff("x", outs, props).replaces == []
    assert not list(journal.iterdir())
    newer = VolumeProvider().create(volume_props(source)).outs
    assert sorted(host.read()["volumes"]["default"]) == sorted([kept["name"], new["name"], newer["name"]])
    VolumeProvider().delete("x", newer)  # a delete forgets its entry too
    assert not list(journal.iterdir())


def test_a_create_the_engine_never_recorded_is_removed_by_the_next_create(host, tmp_path):
    """A create that returned, but whose engine was killed before its checkpoint (CI: an initrd and a
    seed ISO orphaned by a kill during the boots): no diff confirms it, and the next create of that
    resource removes its volume."""
    source = tmp_path / "base.qcow2"
    source.write_bytes(b"\0" * 1024)
    unrecorded = VolumeProvider().create(volume_props(source)).outs
    new = VolumeProvider().create(volume_props(source)).outs
    assert host.read()["volumes"]["default"] == [new["name"]] != [unrecorded["name"]]


def test_another_states_journal_is_not_this_ones(host, tmp_path, monkeypatch):
    source = tmp_path / "base.qcow2"
    source.write_bytes(b"\0" * 1024)
    monkeypatch.setenv("PULUMI_BACKEND_URL", "file:///other-checkout/.state")
    with pytest.raises(SystemExit):
        KilledProvider().create(volume_props(source))
    monkeypatch.setenv("PULUMI_BACKEND_URL", "file:///this-checkout/.state")
    VolumeProvider().create(volume_props(source))
    assert len(host.read()["volumes"]["default"]) == 2  # the other checkout's in-flight volume is its own


def test_volume_checks_name_the_missing_pool_and_image(host, tmp_path):
    props = {**volume_props(tmp_path / "nope.qcow2"), "pool": "nosuch"}
    reasons = {f.property: f.reason for f in VolumeProvider().check({}, props).failures}
    assert "no libvirt storage pool 'nosuch'" in reasons["pool"] and "l2dsr:storagePool" in reasons["pool"]
    assert "nope.qcow2 does not exist" in reasons["source"]


def test_the_hosts_cpus_and_memory_come_from_libvirt(host):
    assert Virsh(URI).nodeinfo() == (2, 24105)  # nodememstats' total, not nodeinfo's NUMA node size
    host.set(mode="down")
    assert Virsh(URI).nodeinfo() is None  # not known: the program leaves the check to the resources


def declared_resources() -> list[type]:
    import importlib
    import pkgutil

    import resources
    from resources.base import Declared

    for info in pkgutil.iter_modules(resources.__path__):
        importlib.import_module(f"resources.{info.name}")
    return sorted(Declared.__subclasses__(), key=lambda c: c.__name__)


@pytest.mark.parametrize("resource", declared_resources(), ids=lambda c: c.__name__)
def test_every_declaration_resolves_its_types(resource):
    """What a provider reads its properties with: every field's type resolves (nested ones too), as in
    the provider process, where an unresolved `pulumi.Input` once failed every readiness wait."""
    import dataclasses

    from resources.base import field_types

    todo = [resource.Args, resource.Outputs]
    while todo:
        cls = todo.pop()
        hints = field_types(cls)
        assert set(hints) >= {f.name for f in dataclasses.fields(cls)}
        todo += [t for t in hints.values() if isinstance(t, type) and dataclasses.is_dataclass(t)]
    assert len(declared_resources()) == 10


def test_readiness_reads_its_stored_inputs_back():
    from resources.base import props_of, read_props
    from resources.readiness import VmReadyArgs
    from runtime.vm import VmRef

    args = VmReadyArgs(
        uri=URI,
        domain_type="qemu",
        guest=VmRef("web01", "web", "172.16.0.101", "l2dsr-lab-web01", "/tmp/console.log"),
        final_message="l2dsr web01 (web) ready after",
        run_token="t",
        group="lab",
        vcpus=1,
        lab_vcpus=4,
        boot_slots=0,
        login_user="lab",
        private_key="key",
    )
    stored = json.loads(json.dumps(props_of(args)).replace(": 1,", ": 1.0,").replace(": 4,", ": 4.0,"))
    assert stored["vcpus"] == 1.0 and read_props(VmReadyArgs, stored) == args


def test_a_network_reads_its_pairs_back_typed():
    from resources.base import props_of, read_props
    from resources.network import NetworkArgs

    args = NetworkArgs(uri=URI, name="l2dsr-lab", xml="<network/>", host_addresses=(("172.16.0.1", 24),), owner=OWNER)
    stored = json.loads(json.dumps(props_of(args)).replace("24]", "24.0]"))
    assert stored["host_addresses"] == [["172.16.0.1", 24.0]] and read_props(NetworkArgs, stored) == args


def test_a_fault_run_reads_its_fault_back_typed():
    """The fault plan holds its Fault: stored as the state stores it (numbers as floats), read back equal."""
    from bench.spec import fault_plan
    from lab.addressing import plan
    from resources.base import props_of, read_props
    from tests.conftest import lab_of, lab_stack_values

    spec, mode = lab_of(
        {**lab_stack_values(), "l2dsr:benchFault": "kill-web:web02@5s-45s", "l2dsr:benchFaultSeconds": 85}
    )
    made = fault_plan(Configured(spec, mode, plan(spec)))
    assert made is not None and str(made.fault) == "kill-web:web02@5s-45s"
    stored = json.loads(json.dumps(props_of(made)).replace(": 5,", ": 5.0,").replace(": 45,", ": 45.0,"))
    assert stored["fault"]["at_s"] == 5.0 and read_props(type(made), stored) == made
