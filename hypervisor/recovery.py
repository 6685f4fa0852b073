"""One command recovers from a crash: the stack's lock left by a `pulumi` that was killed.

Pulumi's file backend locks a stack for an update in `.pulumi/locks/<org>/<project>/<stack>/<id>.json`
({"pid", "username", "hostname", "timestamp"}), and a killed CLI leaves it: the next `up` then fails
with "the stack is currently locked". A lock whose process is gone on this very host cannot be
anybody's any more: `./labctl up` and `destroy` remove it, saying so. One taken on another host, or
whose process lives, is left, with the command that would remove it.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path

from hypervisor import libvirt
from hypervisor.progress import say


def is_stale(lock: dict, hostname: str, alive: Callable[[int], bool] = libvirt.alive) -> bool:
    """A lock taken on this host by a process that no longer runs (pure but for `alive`)."""
    pid = lock.get("pid")
    return lock.get("hostname") == hostname and isinstance(pid, int) and pid > 0 and not alive(pid)


def lock_files(backend: Path, stack: str) -> list[Path]:
    return sorted(p for p in (backend / ".pulumi" / "locks").glob(f"**/{stack}/*.json") if p.is_file())


def clear_stale_locks(backend: Path, stack: str, hostname: str | None = None) -> list[str]:
    """Remove the stack's stale locks; returns what is left locked, each as a readable line."""
    hostname = hostname or socket.gethostname()
    left = []
    for path in lock_files(backend, stack):
        try:
            lock = json.loads(path.read_text())
        except (OSError, ValueError):
            say(f"stack {stack}: an unreadable lock file {path}: left alone")
            left.append(str(path))
            continue
        if is_stale(lock, hostname):
            path.unlink()
            say(
                f"stack {stack}: removed the lock of pulumi pid {lock['pid']} (it no longer runs on this host; "
                f"taken {lock.get('timestamp', '?')}): its run was interrupted, this one picks up from the state"
            )
        else:
            left.append(f"pid {lock.get('pid')} on {lock.get('hostname')} since {lock.get('timestamp', '?')}")
    return left
