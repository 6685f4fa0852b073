"""ruff, as in review: lint and formatting are part of the suite, so CI enforces them."""

from __future__ import annotations

import subprocess
import sys

from tests.program import PROJECT_DIR


def test_ruff_lint_is_clean():
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=PROJECT_DIR, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def test_ruff_format_is_clean():
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "."], cwd=PROJECT_DIR, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout


def test_types_check_clean():
    """mypy over every layer and the program (its settings in pyproject.toml)."""
    done = subprocess.run([sys.executable, "-m", "mypy"], cwd=PROJECT_DIR, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
