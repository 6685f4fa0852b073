"""Every config case in tests/cases/<name>/ (tests/cases/README.md): its config.yaml refused,
warned about or accepted exactly as its expected.yaml says, and rendered exactly as its rendered/
files show (cloud-init documents and libvirt XML alike).

Regenerate rendered/ files with L2DSR_UPDATE_GOLDEN=1 after an intended change (and review the diff);
a new (even empty) file there is filled the same way."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from components.network import network_def, segment_mtu
from guest import render
from lab.addressing import domain_name, mac_address, plan
from lab.hostfit import HostFacts
from lab.placement import Placement, place
from lab.spec import ConfigError, LabSpec, Problem
from lab.tuning import tuning_of
from lbmodes import Mode
from resolution import configure, resolve
from tests.conftest import BIG_HOST, KEY, lab_of
from virt.tunnel import TunnelEnd, interface_name, stack_vni
from virt.xml import DomainDef, domain_tuning, domain_xml, network_xml

PROJECT_DIR = Path(__file__).resolve().parent.parent
CASES = sorted(p.parent for p in (Path(__file__).resolve().parent / "cases").glob("*/config.yaml"))
RENDERED = sorted(p.parent for p in (Path(__file__).resolve().parent / "cases").glob("*/rendered/"))


def case_values(case: dict) -> dict:
    base = yaml.safe_load((PROJECT_DIR / f"Pulumi.{case['base']}.yaml").read_text())["config"] if "base" in case else {}
    return {**base, **(case.get("config") or {})}


def host_facts(case: dict, spec: LabSpec) -> dict[str, HostFacts]:
    """What libvirt says of each host: `hosts:` per name, or `host:` for all (default: BIG_HOST)."""
    one = HostFacts(case["host"]["cpus"], case["host"]["memoryMiB"]) if "host" in case else BIG_HOST
    given = case.get("hosts") or {}
    return {
        h.name: HostFacts(given[h.name]["cpus"], given[h.name]["memoryMiB"]) if h.name in given else one
        for h in spec.hosts
    }


def placed(case: dict, spec: LabSpec) -> Placement:
    return place(spec, plan(spec), host_facts(case, spec), case.get("domainType", "qemu"))


def outcome(case: dict) -> tuple[list[Problem], list[str]]:
    """(problems, warnings), as the program gets them (resolution/): the config first, then the
    placement and the hosts."""
    try:
        configured = configure(case_values(case))
        lab = resolve(configured, host_facts(case, configured.spec), case.get("domainType", "qemu"))
    except ConfigError as e:
        return e.problems, list(e.warnings)
    return [], list(lab.warnings)


def as_list(texts: str | list[str]) -> list[str]:
    return [texts] if isinstance(texts, str) else texts


def test_every_folder_is_a_case():
    """A folder without config.yaml would be skipped without a word: it is a mistake, not a case."""
    folders = sorted(p for p in (Path(__file__).resolve().parent / "cases").iterdir() if p.is_dir())
    assert folders == CASES and len(CASES) >= 40


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_case(path: Path):
    case = yaml.safe_load((path / "config.yaml").read_text())
    assert (path / "expected.yaml").exists(), f"{path}: no expected.yaml (say `accepted: true` or what is refused)"
    said = yaml.safe_load((path / "expected.yaml").read_text()) or {}
    assert said.get("accepted") is True or said.get("refused"), f"{path}/expected.yaml: accepted: true, or refused:"
    problems, warnings = outcome(case)
    expected = said.get("refused") or {}
    assert sorted({p.key for p in problems}) == sorted(k.removeprefix("l2dsr:") for k in expected), problems
    for key, texts in expected.items():
        lines = [str(p) for p in problems if p.key == key.removeprefix("l2dsr:")]
        for text in as_list(texts):
            assert any(text in line for line in lines), f"{key}: {text!r} not in {lines}"
    if "warned" in said or not expected:  # an accepted case lists every warning; a refused one may
        assert len(warnings) == len(said.get("warned") or []), warnings
    for text in said.get("warned") or []:
        assert any(text in w for w in warnings), f"{text!r} not in {warnings}"


def document(case: dict, spec: LabSpec, mode: Mode, name: str) -> str:
    """A rendered file by its name in rendered/: `<guest>.user-data.yaml`, `<guest>.network-config.yaml`,
    `network.xml` or `<guest>.domain.xml` (the LB's with its tuning on a host of the case's CPUs); with
    several hosts also `placement.txt` (VM, role, host), `<host>.network.xml` and `<host>.tunnel.sh`
    (the commands that make, then remove, that host's end of the segment)."""
    p = plan(spec)
    domain_type = case.get("domainType", "qemu")
    host_cpus = case["host"]["cpus"] if "host" in case else BIG_HOST.cpus
    tuning = tuning_of(spec.lb_tuning, spec.vcpus["lb"])
    guest_name, _, kind = name.partition(".")
    index = {h.name: i for i, h in enumerate(spec.hosts)}
    if name == "network.xml":
        return network_xml(network_def("lab", p, 0, len(spec.hosts)))
    if name == "placement.txt":
        return placed(case, spec).table(p) + "\n"
    if guest_name in index and kind == "network.xml":
        return network_xml(network_def("lab", p, index[guest_name], len(spec.hosts)))
    if guest_name in index and kind == "tunnel.sh":
        host = spec.hosts[index[guest_name]]
        end = TunnelEnd(
            interface_name("lab"),
            stack_vni("l2dsr", "lab"),
            host.address,
            tuple(h.address for h in spec.hosts if h is not host),
            network_def("lab", p).bridge,
            "l2dsr:<owner>",
        )
        return (
            "\n".join(
                ["# make", *end.create_commands(), "# read", end.read_command(), "# remove", end.delete_command()]
            )
            + "\n"
        )
    guest = {g.name: g for g in p.guests}[guest_name]
    if kind == "user-data.yaml":
        return render.user_data(spec, mode, p, guest, KEY)
    if kind == "network-config.yaml":
        return render.network_config(p, guest, segment_mtu(len(spec.hosts)))
    if kind == "domain.xml":
        return domain_xml(
            DomainDef(
                name=domain_name("lab", guest),
                domain_type=domain_type,
                vcpus=spec.vcpus[guest.role],
                memory_mib=spec.memory_mib[guest.role],
                pool=spec.storage_pool,
                disk_volume=f"{domain_name('lab', guest)}.qcow2",
                seed_volume=f"{domain_name('lab', guest)}-seed-0123456789.iso",
                network="l2dsr-lab",
                mac=mac_address(guest),
                kernel="/images/vmlinuz",
                initrd="/images/initrd.img",
                cmdline="root=/dev/vda rw console=ttyS0,115200 net.ifnames=0 ds=nocloud",
                tuning=domain_tuning(tuning, host_cpus) if guest.role == "lb" and tuning else None,
            )
        )
    raise ValueError(
        f"{name}: not <guest>.user-data.yaml, <guest>.network-config.yaml, network.xml or <guest>.domain.xml"
    )


@pytest.mark.parametrize(
    "path",
    [f for d in RENDERED for f in sorted((d / "rendered").iterdir())],
    ids=lambda f: f"{f.parent.parent.name}/{f.name}",
)
def test_rendered(path: Path):
    case = yaml.safe_load((path.parent.parent / "config.yaml").read_text())
    spec, mode = lab_of(case_values(case))
    text = document(case, spec, mode, path.name)
    if os.environ.get("L2DSR_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), (
        f"{path} changed; if intended, regenerate with L2DSR_UPDATE_GOLDEN=1 and review the diff"
    )
