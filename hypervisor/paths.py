"""Where the lab keeps what it builds: outside the work tree, keyed by inputs."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """Build results (engine binaries, images). Override with L2DSR_CACHE."""
    return Path(os.environ.get("L2DSR_CACHE") or Path.home() / ".cache" / "l2dsr")


def state_dir() -> Path:
    """Pulumi state (file backend) and PULUMI_HOME: per checkout, ignored by git."""
    return Path(os.environ.get("L2DSR_STATE") or PROJECT_DIR / ".state")


@contextmanager
def build_lock(name: str) -> Iterator[None]:
    """One builder at a time for a cached artefact: a second `./labctl` (or a test) waits, then finds it built."""
    lock = cache_dir() / f".{name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
