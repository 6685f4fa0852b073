"""The deep suite's lab (on demand): dsr, two clients, one small step per benchmark; built by its first
phase, destroyed after the last."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.lab import CLIENTS, LOAD, SMALL_MATRIX, Run, e2e_lab


@pytest.fixture(scope="package")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    with e2e_lab(
        tmp_path_factory.mktemp("e2e-deep"), "e2e-deep", mode="dsr", clientCount=CLIENTS, **SMALL_MATRIX, **LOAD["dsr"]
    ) as lab:
        yield lab
