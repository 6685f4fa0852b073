"""Every folder of tests/tables/ (its README): real runs in, the results table out, exactly."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bench.matrix import summarize
from bench.report import results_table

CASES = sorted(p.parent for p in (Path(__file__).resolve().parent / "tables").glob("*/runs.json"))


def test_every_folder_is_a_case():
    folders = sorted(p for p in (Path(__file__).resolve().parent / "tables").iterdir() if p.is_dir())
    assert folders == CASES and len(CASES) >= 5


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_table(case: Path):
    table = results_table(summarize(json.loads((case / "runs.json").read_text())))
    golden = case / "table.md"
    if os.environ.get("L2DSR_UPDATE_GOLDEN"):
        golden.write_text(table)
    assert table == golden.read_text(), f"{golden} changed; if intended, regenerate with L2DSR_UPDATE_GOLDEN=1"
