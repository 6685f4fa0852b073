"""Progress lines for long host steps, with the full output of each step in a log file."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


class StepFailed(RuntimeError):
    pass


def say(message: str) -> None:
    print(f"[l2dsr] {message}", file=sys.stderr, flush=True)


def run_logged(
    what: str,
    argv: Sequence[str],
    log: Path,
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> float:
    """Run one long step, appending its output to `log`; one line when it starts and ends."""
    log.parent.mkdir(parents=True, exist_ok=True)
    say(f"{what} ... (log: {log})")
    start = time.monotonic()
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(argv)}\n")
        out.flush()
        rc = subprocess.call(list(argv), stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env)
    took = time.monotonic() - start
    if rc != 0:
        raise StepFailed(f"{what} failed (exit {rc}) after {took:.0f} s; see {log}")
    say(f"{what}: done in {took:.0f} s")
    return took
