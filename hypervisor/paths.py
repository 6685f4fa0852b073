"""Where the lab keeps what it builds: outside the work tree, keyed by inputs."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from runtime.hostfacts import PROJECT_DIR, cache_dir

__all__ = ["PROJECT_DIR", "build_lock", "cache_dir", "state_dir"]


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
