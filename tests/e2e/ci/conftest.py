"""CI's lab: proxy with the seed's HTTPS frontend on the LB, two clients, the matrix of tests/e2e/lab.py;
built by the first phase, destroyed after the last (nothing of it may be left)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.lab import CLIENTS, LOAD, MATRIX, Run, e2e_lab


@pytest.fixture(scope="package")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    with e2e_lab(
        tmp_path_factory.mktemp("e2e"), "e2e", https=True, clientCount=CLIENTS, **MATRIX, **LOAD["proxy"]
    ) as lab:
        yield lab
