"""Every config case in tests/cases/<name>/ (tests/cases/README.md): its config.yaml refused (or
warned about) as its expected.yaml says, and rendered exactly as its rendered/ files show.

Regenerate rendered/ files with L2DSR_UPDATE_GOLDEN=1 after an intended change (and review the diff);
a new (even empty) file there is filled the same way."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from guest import render
from lab.addressing import plan
from lab.config import ConfigError, LabSpec, load_spec
from lab.hostfit import HostFacts, host_fit

PROJECT_DIR = Path(__file__).resolve().parent.parent
CASES = sorted(p.parent for p in (Path(__file__).resolve().parent / "cases").glob("*/config.yaml"))
RENDERED = sorted(p.parent for p in (Path(__file__).resolve().parent / "cases").glob("*/rendered/"))
BIG_HOST = HostFacts(cpus=64, memory_mib=256 * 1024)
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGolden l2dsr-test"


def case_values(case: dict) -> dict:
    base = yaml.safe_load((PROJECT_DIR / f"Pulumi.{case['base']}.yaml").read_text())["config"] if "base" in case else {}
    return {**base, **(case.get("config") or {})}


def outcome(case: dict) -> tuple[list[str], list[str]]:
    """(problems, warnings), as the program gets them: the config first, then the host."""
    try:
        spec = load_spec(case_values(case))
    except ConfigError as e:
        return e.problems, []
    host = HostFacts(case["host"]["cpus"], case["host"]["memoryMiB"]) if "host" in case else BIG_HOST
    return host_fit(spec, case.get("domainType", "qemu"), host)


def as_list(texts: str | list[str]) -> list[str]:
    return [texts] if isinstance(texts, str) else texts


def test_there_are_cases():
    assert len(CASES) >= 40


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_case(path: Path):
    case = yaml.safe_load((path / "config.yaml").read_text())
    said = yaml.safe_load((path / "expected.yaml").read_text()) if (path / "expected.yaml").exists() else {}
    problems, warnings = outcome(case)
    expected = said.get("refused") or {}
    assert sorted({p.split(":")[1] for p in problems}) == sorted(k.split(":")[1] for k in expected), problems
    for key, texts in expected.items():
        lines = [p for p in problems if p.startswith(key + ":")]
        for text in as_list(texts):
            assert any(text in line for line in lines), f"{key}: {text!r} not in {lines}"
    if "warned" in said:
        assert len(warnings) == len(said["warned"]), warnings
        for text in said["warned"]:
            assert any(text in w for w in warnings), f"{text!r} not in {warnings}"


def document(spec: LabSpec, name: str) -> str:
    """A rendered file by its name in rendered/: `<guest>.user-data.yaml` or `<guest>.network-config.yaml`."""
    p = plan(spec)
    guest_name, _, kind = name.partition(".")
    guest = {g.name: g for g in p.guests}[guest_name]
    if kind == "user-data.yaml":
        return render.user_data(spec, p, guest, KEY)
    if kind == "network-config.yaml":
        return render.network_config(p, guest)
    raise ValueError(f"{name}: not <guest>.user-data.yaml or <guest>.network-config.yaml")


@pytest.mark.parametrize(
    "path",
    [f for d in RENDERED for f in sorted((d / "rendered").iterdir())],
    ids=lambda f: f"{f.parent.parent.name}/{f.name}",
)
def test_rendered(path: Path):
    case = yaml.safe_load((path.parent.parent / "config.yaml").read_text())
    text = document(load_spec(case_values(case)), path.name)
    if os.environ.get("L2DSR_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), (
        f"{path} changed; if intended, regenerate with L2DSR_UPDATE_GOLDEN=1 and review the diff"
    )
