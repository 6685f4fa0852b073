"""The e2e suites' phases (tests/e2e/conftest.py), on a suite of its own: a phase that needs one that
failed is skipped naming it; one that needs nothing still runs after a failure; a needed phase that
passed lets its dependant run."""

from __future__ import annotations

import shutil
import subprocess
import sys

from runtime.hostfacts import PROJECT_DIR

SUITE = """
import pytest

def test_builds():
    pass

def test_breaks():
    assert False, "broken on purpose"

@pytest.mark.needs("test_breaks")
def test_after_the_break():
    pass

def test_on_its_own():
    pass

@pytest.mark.needs("test_builds", "test_on_its_own")
def test_after_both():
    pass

@pytest.mark.needs("test_never_written")
def test_after_nothing():
    pass
"""


def test_a_phase_is_skipped_naming_the_one_it_needs(tmp_path):
    suite = tmp_path / "suite"
    suite.mkdir()
    shutil.copy(PROJECT_DIR / "tests" / "e2e" / "conftest.py", suite / "conftest.py")
    (suite / "test_phases.py").write_text(SUITE)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    needs(phase): x\n")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "-q", str(suite)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    said = done.stdout
    assert done.returncode == 1, said
    assert "PASSED suite/test_phases.py::test_builds" in said
    assert "FAILED suite/test_phases.py::test_breaks" in said
    assert "needs test_breaks, which failed" in said
    assert "PASSED suite/test_phases.py::test_on_its_own" in said
    assert "PASSED suite/test_phases.py::test_after_both" in said
    assert "needs test_never_written, which did not run" in said
    assert "1 failed, 3 passed, 2 skipped" in said, said
