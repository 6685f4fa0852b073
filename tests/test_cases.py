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

from bench.cost import cost_problems
from components.network import network_def
from guest import render
from lab.addressing import domain_name, mac_address, plan
from lab.hostfit import HostFacts, host_fit
from lab.spec import ConfigError, LabSpec, Problem
from lab.tuning import tuning_of
from lbmodes import Mode
from tests.conftest import BIG_HOST, KEY, lab_of
from virt.xml import DomainDef, domain_tuning, domain_xml, network_xml

PROJECT_DIR = Path(__file__).resolve().parent.parent
CASES = sorted(p.parent for p in (Path(__file__).resolve().parent / "cases").glob("*/config.yaml"))
RENDERED = sorted(p.parent for p in (Path(__file__).resolve().parent / "cases").glob("*/rendered/"))


def case_values(case: dict) -> dict:
    base = yaml.safe_load((PROJECT_DIR / f"Pulumi.{case['base']}.yaml").read_text())["config"] if "base" in case else {}
    return {**base, **(case.get("config") or {})}


def outcome(case: dict) -> tuple[list[Problem], list[str]]:
    """(problems, warnings), as the program gets them: the config first, then the host."""
    try:
        spec, mode = lab_of(case_values(case))
    except ConfigError as e:
        return e.problems, []
    host = HostFacts(case["host"]["cpus"], case["host"]["memoryMiB"]) if "host" in case else BIG_HOST
    problems, warnings = host_fit(spec, case.get("domainType", "qemu"), host)
    return problems + cost_problems(spec, mode, case.get("domainType", "qemu"))[1], warnings


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


def document(spec: LabSpec, mode: Mode, domain_type: str, name: str, host_cpus: int = BIG_HOST.cpus) -> str:
    """A rendered file by its name in rendered/: `<guest>.user-data.yaml`, `<guest>.network-config.yaml`,
    `network.xml` or `<guest>.domain.xml` (the LB's with its tuning on a host of `host_cpus`)."""
    p = plan(spec)
    tuning = tuning_of(spec.lb_tuning, spec.vcpus["lb"])
    guest_name, _, kind = name.partition(".")
    if name == "network.xml":
        return network_xml(network_def("lab", p))
    guest = {g.name: g for g in p.guests}[guest_name]
    if kind == "user-data.yaml":
        return render.user_data(spec, mode, p, guest, KEY)
    if kind == "network-config.yaml":
        return render.network_config(p, guest)
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
    host_cpus = case["host"]["cpus"] if "host" in case else BIG_HOST.cpus
    text = document(spec, mode, case.get("domainType", "qemu"), path.name, host_cpus)
    if os.environ.get("L2DSR_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), (
        f"{path} changed; if intended, regenerate with L2DSR_UPDATE_GOLDEN=1 and review the diff"
    )
