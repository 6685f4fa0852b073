"""What the lab's provider code may ask of the process it runs in (engine/provider_host.py).

- `cancelled`: set when the engine cancels the operation (Ctrl-C in `pulumi up`); long waits and
  benchmark runs check it and stop within seconds.
- `log(...)`: a line shown under the resource being created, in `pulumi up` itself (ephemeral: the
  resource's status column). Outside the provider host (tests, scripts) it goes to stderr.
- `LabFailure`: a failure whose message says everything (which VM, what, the log lines that show it):
  the CLI shows that message, not a Python traceback.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

cancelled = threading.Event()
_current = threading.local()
_sink: Callable[[str, str, bool, str], None] | None = None


class LabFailure(RuntimeError):
    """A failure that is fully described by its message."""


class Cancelled(LabFailure):
    def __init__(self, what: str):
        super().__init__(f"{what}: stopped, the operation was cancelled")


def set_sink(sink: Callable[[str, str, bool, str], None]) -> None:
    """(severity, message, ephemeral, urn) -> the engine's log (set by the provider host)."""
    global _sink
    _sink = sink


def at_once(work: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """`work(item)` for every item at once, one thread each (they wait on SSH and libvirt, not on
    this machine's CPU); the results in the items' order; the first exception is raised."""
    items = list(items)
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        return list(pool.map(work, items))


def set_current_urn(urn: str) -> None:
    _current.urn = urn


def log(message: str, *, ephemeral: bool = False, severity: str = "info") -> None:
    urn = getattr(_current, "urn", "")
    if _sink is not None:
        try:
            _sink(severity, message, ephemeral, urn)
            return
        except Exception:  # noqa: BLE001 (a lost log line must not fail the operation)
            pass
    if not ephemeral:
        print(f"[l2dsr] {message}", file=sys.stderr, flush=True)


def check_cancelled(what: str) -> None:
    if cancelled.is_set():
        raise Cancelled(what)


def sleep(seconds: float, what: str) -> None:
    """time.sleep that ends early, with Cancelled, when the operation is cancelled."""
    if cancelled.wait(seconds):
        raise Cancelled(what)
