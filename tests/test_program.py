"""The Pulumi program under mocks: the resource graph for the seed and the lab stack, and mode switches."""

from __future__ import annotations

import os
from collections import Counter

import pulumi
import pytest
import yaml

from lab import config
from tests.conftest import lab_stack_values
from tests.program import PROJECT_DIR, Registered, run_program

FAKE_IMAGE = {"image": "/srv/images/base.qcow2", "domainType": "qemu"}


def graph(config: dict, stack: str = "lab") -> dict[str, Registered]:
    resources, _ = run_program({**FAKE_IMAGE, **config}, stack=stack)
    by_name = {r.name: r for r in resources}
    assert len(by_name) == len(resources), "resource names must be unique"
    return by_name


@pytest.fixture(scope="module")
def seed_graph() -> dict[str, Registered]:
    return graph({})


@pytest.fixture(scope="module")
def lab_graph() -> dict[str, Registered]:
    return graph(lab_stack_values())


def test_seed_config_builds_the_seeds_lab(seed_graph):
    types = Counter(r.type for r in seed_graph.values())
    assert types["l2dsr:lab:Vm"] == 27  # 25 webs, 1 LB, 1 client
    assert types["l2dsr:lab:WebTier"] == types["l2dsr:lab:LoadBalancer"] == types["l2dsr:lab:Clients"] == 1
    assert types["l2dsr:lab:LabNetwork"] == types["l2dsr:lab:BaseImage"] == types["l2dsr:lab:Benchmark"] == 1
    assert types["pulumi-python:dynamic/l2dsr:Domain"] == 27
    assert types["pulumi-python:dynamic/l2dsr:Volume"] == 27 + 1  # an overlay each, one base
    assert types["pulumi-python:dynamic/l2dsr:CloudInitDisk"] == 27
    assert types["pulumi-python:dynamic/l2dsr:VmReady"] == types["pulumi-python:dynamic/l2dsr:GuestState"] == 27
    # components: 27 Vm + WebTier, LoadBalancer, Clients, LabNetwork, BaseImage, Benchmark = 33;
    # custom: 27 x (disk, seed, domain, ready, state) + base volume, network, identity, SSH key, benchmark run = 140
    assert len(seed_graph) == 173


def test_every_vm_has_disk_seed_domain_readiness_and_state_as_children(seed_graph):
    vms = [r.name for r in seed_graph.values() if r.type == "l2dsr:lab:Vm"]
    for vm in vms:
        children = sorted(r.name.removeprefix(vm + "-") for r in seed_graph.values() if r.parent == vm)
        assert children == ["disk", "domain", "ready", "seed", "state"], vm
    assert {seed_graph[v].parent for v in vms} == {"web", "lb", "client"}
    assert seed_graph["web-web25"].parent == "web"


def test_lab_stack_graph_and_stable_names(lab_graph):
    domains = sorted(r.inputs["name"] for r in lab_graph.values() if r.type.endswith(":Domain"))
    assert domains == ["l2dsr-lab-client01", "l2dsr-lab-lb", "l2dsr-lab-web01", "l2dsr-lab-web02"]
    assert lab_graph["network-segment"].inputs["name"] == "l2dsr-lab"
    assert all(r.inputs["uri"] == "qemu:///system" for r in lab_graph.values() if r.type.endswith(":Domain"))


def test_domains_use_software_emulation_with_a_capped_translation_cache(lab_graph):
    xml = lab_graph["web-web01-domain"].inputs["xml"]
    assert "<domain type='qemu'>" in xml and "<tb-cache unit='MiB'>128</tb-cache>" in xml
    assert "<memory unit='MiB'>512</memory>" in xml


def test_private_key_is_a_secret(lab_graph):
    """Every resource that holds the private key (its maker, each readiness wait, the benchmark's
    connection) declares that output secret, so the state stores it encrypted; the end-to-end test
    reads the real state for it."""
    holders = {
        name: r for name, r in lab_graph.items() if r.custom and ("private_key" in r.inputs or "connection" in r.inputs)
    }
    holders["ssh-key"] = lab_graph["ssh-key"]
    assert len(holders) == 1 + 4 + 4 + 1  # the key, 4 readiness waits, 4 guest states, the benchmark
    for name, r in holders.items():
        secret = {"ssh-key": "private_key", "bench-run": "connection"}.get(name, "private_key")
        assert secret in r.secret_outputs, f"{name} stores {secret} in plain text"
    assert lab_graph["ssh-key"].inputs == {"comment": "l2dsr-lab"}  # nothing of the key goes in


def _inputs(g: dict[str, Registered]) -> dict[str, dict]:
    return {name: r.inputs for name, r in g.items() if r.custom}


def test_mode_switch_changes_the_lb_and_benchmark_only(lab_graph):
    dsr = graph({**lab_stack_values(), "mode": "dsr"})
    before, after = _inputs(lab_graph), _inputs(dsr)
    assert before.keys() == after.keys()
    changed = sorted(n for n in before if before[n] != after[n])
    # The LB's state checks change with its mode (IPVS rules instead of HAProxy's servers).
    assert changed == ["bench-run", "lb-vm-disk", "lb-vm-domain", "lb-vm-ready", "lb-vm-seed", "lb-vm-state"]


def test_a_vm_created_anew_reruns_the_benchmark(lab_graph):
    # More memory for the webs replaces their domains: new domains boot anew (a new boot id from their
    # readiness), and the benchmark's inputs change with them, so its outputs describe the new lab.
    bigger = graph({**lab_stack_values(), "webMemoryMiB": 640})
    before, after = _inputs(lab_graph), _inputs(bigger)
    changed = sorted(n for n in before if before[n] != after[n])
    assert changed == [
        "bench-run",
        "web-web01-domain",
        "web-web01-ready",
        "web-web01-state",
        "web-web02-domain",
        "web-web02-ready",
        "web-web02-state",
    ]
    assert before["bench-run"]["create"] == after["bench-run"]["create"]
    assert before["bench-run"]["triggers"] != after["bench-run"]["triggers"]


def test_benchmark_settings_change_only_the_benchmark(lab_graph):
    other = graph({**lab_stack_values(), "benchConcurrency": 10, "benchTrigger": "again"})
    before, after = _inputs(lab_graph), _inputs(other)
    assert sorted(n for n in before if before[n] != after[n]) == ["bench-run"]


def test_stacks_do_not_share_names(lab_graph):
    other = graph(lab_stack_values(), stack="dsr")
    ours = {r.inputs.get("name") for r in lab_graph.values() if r.custom} - {None}
    theirs = {r.inputs.get("name") for r in other.values() if r.custom} - {None}
    assert not ours & theirs


def test_bad_config_fails_before_any_resource():
    seen: list[Registered] = []
    with pytest.raises(pulumi.RunError, match=r"l2dsr:webCount: 0 is below 1"):
        run_program({**FAKE_IMAGE, "webCount": 0, "vip": "10.0.0.1"}, seen=seen)
    assert seen == []


def test_a_misspelt_key_in_the_stack_is_refused_not_ignored():
    """The program learns which keys a stack sets from its stack file (the SDK cannot list them)."""
    stack = f"misspelt-{os.getpid()}"
    stack_file = config.stack_file(stack)
    stack_file.parent.mkdir(exist_ok=True)
    stack_file.write_text(yaml.safe_dump({"config": {"l2dsr:webcount": "3"}}))
    seen: list[Registered] = []
    try:
        with pytest.raises(pulumi.RunError, match=r"l2dsr:webcount: unknown key; did you mean l2dsr:webCount\?"):
            run_program({**FAKE_IMAGE, "webcount": 3}, stack=stack, seen=seen)
    finally:
        stack_file.unlink()
    assert seen == []


def test_missing_builtin_image_says_what_to_run(tmp_path, monkeypatch):
    monkeypatch.setenv("L2DSR_CACHE", str(tmp_path))
    with pytest.raises(Exception, match=r"run ./labctl image"):
        run_program({"domainType": "qemu"})


def test_outputs_name_every_vm():
    _, ns = run_program({**FAKE_IMAGE, **lab_stack_values()})
    names = [vm.ref.domain for vm in ns["all_vms"]]
    assert names == ["l2dsr-lab-client01", "l2dsr-lab-lb", "l2dsr-lab-web01", "l2dsr-lab-web02"]


@pytest.fixture
def simulated_hosts_key(tmp_path, monkeypatch):
    """The key Pulumi.twohost.yaml names (~/.cache/l2dsr/hosts/id_ed25519), as `./labctl hosts up` makes
    it, in a home of the test's own: the program refuses an identityFile it cannot read."""
    key = tmp_path / ".cache" / "l2dsr" / "hosts" / "id_ed25519"
    key.parent.mkdir(parents=True)
    key.write_text("a key\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    return key


def twohost_values() -> dict:
    return {
        k.removeprefix("l2dsr:"): v
        for k, v in yaml.safe_load((PROJECT_DIR / "Pulumi.twohost.yaml").read_text())["config"].items()
    }


@pytest.mark.usefixtures("simulated_hosts_key")
def test_a_lab_across_two_hosts_puts_each_resource_on_its_host():
    """Pulumi.twohost.yaml: a network, a VXLAN end and a base image per host; each VM's disk, seed,
    domain and readiness on the host it is placed on; a remote host's guests reached through it."""
    g = graph(twohost_values(), stack="twohost")
    h1, h2 = (h["uri"] for h in twohost_values()["hosts"])
    h2 = h2.replace("~", os.path.expanduser("~"))
    assert g["network-segment"].inputs["uri"] == h1 and g["network-segment-h2"].inputs["uri"] == h2
    assert "<mtu size='1450'/>" in g["network-segment-h2"].inputs["xml"]
    ends = {n: g[n].inputs for n in ("network-vxlan-h1", "network-vxlan-h2")}
    assert ends["network-vxlan-h1"]["peers"] == ["10.254.0.2"] and ends["network-vxlan-h2"]["peers"] == ["10.254.0.1"]
    assert ends["network-vxlan-h1"]["host"]["address"] == ""  # h1 is this machine: its steps run here
    assert ends["network-vxlan-h2"]["host"]["address"] == "10.254.0.2"
    assert len({e["vni"] for e in ends.values()}) == 1
    assert g["base-volume"].inputs["uri"] == h1 and g["base-h2-volume"].inputs["uri"] == h2
    for vm, uri in (("web-web01", h2), ("web-web02", h2), ("lb-vm", h1), ("client-client01", h1)):
        for part in ("disk", "seed", "domain", "ready"):
            assert g[f"{vm}-{part}"].inputs["uri"] == uri, (vm, part)
    assert g["web-web01-ready"].inputs["guest"]["host"]["name"] == "h2"
    assert g["web-web01-ready"].inputs["group"] == "twohost@h2"  # boots take turns per host
    assert "mtu: 1450" in g["web-web01-seed"].inputs["network_config"]


@pytest.mark.usefixtures("simulated_hosts_key")
def test_an_unreachable_host_stops_the_program_before_any_resource():
    seen: list[Registered] = []
    with pytest.raises(pulumi.RunError) as raised:
        run_program({**FAKE_IMAGE, **twohost_values()}, stack="twohost", seen=seen, hosts={"h2": None})
    message = str(raised.value)
    assert message.startswith("l2dsr:hosts: 1 of 2 host(s) cannot be used, so nothing was created on any host")
    assert "host h2 (qemu+ssh://root@10.254.0.2/system" in message and "does not answer" in message
    assert seen == []


@pytest.mark.usefixtures("simulated_hosts_key")
def test_a_host_too_small_for_what_is_placed_on_it_is_refused_before_any_resource():
    seen: list[Registered] = []
    with pytest.raises(pulumi.RunError, match=r"the VMs placed on h2 need 1504 MiB .* host h2 has 1024 MiB"):
        run_program({**FAKE_IMAGE, **twohost_values()}, stack="twohost", seen=seen, hosts={"h2": (2, 1024)})
    assert seen == []
