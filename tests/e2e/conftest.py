"""The e2e suites' phases. A phase that builds on an earlier one says so (`@pytest.mark.needs(
"test_...")`, by name within its suite) and is skipped, naming that phase, when it did not pass:
one failure shows as itself, and the phases that do not depend on it still run."""

from __future__ import annotations

from pathlib import Path

import pytest

OUTCOMES: dict[tuple[Path, str], str] = {}  # (suite, phase) -> passed, failed, skipped


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):  # a set-up's too
        OUTCOMES[(item.path.parent, item.name)] = report.outcome
    return None


@pytest.fixture(autouse=True)
def _earlier_phases(request: pytest.FixtureRequest) -> None:
    marker = request.node.get_closest_marker("needs")
    for phase in marker.args if marker else ():
        outcome = OUTCOMES.get((request.node.path.parent, phase), "did not run")
        if outcome != "passed":
            pytest.skip(f"needs {phase}, which {'did not run' if outcome == 'did not run' else outcome}")
