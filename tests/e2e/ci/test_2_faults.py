"""CI's lab under a fault: web02's nginx stopped for 40 s during a run; HAProxy's check takes it out
and back (only the benchmark reruns), held to windows taken from the run's own record."""

from __future__ import annotations

import pytest

from tests.conftest import stack_outputs
from tests.e2e.faults import FAULT, check_fault
from tests.e2e.lab import LOAD, SMALL_MATRIX, Run, set_matrix

pytestmark = pytest.mark.lab


@pytest.mark.needs("test_first_up_killed_twice_then_recovered")
def test_a_web_fails_under_haproxys_check(run: Run) -> None:
    set_matrix(run.cli, {**SMALL_MATRIX, **LOAD["proxy"], **FAULT})
    run.cli("config", "set", "l2dsr:benchScheme", "http")
    run.up("fault_proxy")
    run.seen["fault_proxy"] = check_fault(stack_outputs(run.cli), "HAProxy check", 2)
