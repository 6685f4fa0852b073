"""Every config case in tests/cases/<name>/: its config.yaml refused (or warned about) as its
expected.yaml says (tests/cases/README.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lab.config import ConfigError, load_spec
from lab.hostfit import HostFacts, host_fit

PROJECT_DIR = Path(__file__).resolve().parent.parent
CASES = sorted(p.parent for p in (Path(__file__).resolve().parent / "cases").glob("*/config.yaml"))
BIG_HOST = HostFacts(cpus=64, memory_mib=256 * 1024)


def outcome(case: dict) -> tuple[list[str], list[str]]:
    """(problems, warnings), as the program gets them: the config first, then the host."""
    base = yaml.safe_load((PROJECT_DIR / f"Pulumi.{case['base']}.yaml").read_text())["config"] if "base" in case else {}
    values = {**base, **(case.get("config") or {})}
    try:
        spec = load_spec(values)
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
    said = yaml.safe_load((path / "expected.yaml").read_text())
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
