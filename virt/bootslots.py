"""Boots take turns, and the waits of one stack share a verdict: the provider process's two coordinators.

`BOOT_SLOTS`: at most a bounded number of the guests an `up` creates boot at once on their libvirt
host (slots live in the provider process), the rest wait, defined but not started, so 27 emulated
boots do not thrash two cores. `VERDICTS`: when one VM of a stack fails, the others stop waiting
within seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import runtime


class NotReady(runtime.LabFailure):
    """A VM that is certainly not going to be ready: the message says which and why."""


class _Verdicts:
    """The first failure of each group (a stack's VMs): the other waits of the group stop on it."""

    def __init__(self) -> None:
        self._first: dict[str, str] = {}
        self._lock = threading.Lock()

    def fail(self, group: str, vm: str) -> None:
        with self._lock:
            self._first.setdefault(group, vm)

    def failed_first(self, group: str, vm: str) -> str | None:
        with self._lock:
            other = self._first.get(group)
        return other if other and other != vm else None


VERDICTS = _Verdicts()


class BootSlots:
    """At most `size` guests of one libvirt host booting at once (from start to cloud-init done)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._booting: dict[str, set[str]] = {}

    def booting(self, host: str) -> int:
        with self._cond:
            return len(self._booting.get(host, ()))

    @contextmanager
    def hold(self, host: str, size: int, vm: str, group: str) -> Iterator[float]:
        """Wait (cancellably, and not past a failure in the group) for a slot; yields the wait."""
        start = time.monotonic()
        next_note = start
        with self._cond:
            while len(self._booting.setdefault(host, set())) >= size:
                runtime.check_cancelled(f"{vm}: waiting for a boot slot")
                other = VERDICTS.failed_first(group, vm)
                if other:
                    raise NotReady(f"{vm}: not started: {other} failed first (see its error)")
                if time.monotonic() >= next_note:
                    next_note = time.monotonic() + 15
                    runtime.log(
                        f"{vm}: waiting to boot, {len(self._booting[host])} of {size} boot slots busy, "
                        f"{time.monotonic() - start:.0f} s",
                        ephemeral=True,
                    )
                self._cond.wait(1.0)
            self._booting[host].add(vm)
        try:
            yield time.monotonic() - start
        finally:
            with self._cond:
                self._booting[host].discard(vm)
                self._cond.notify_all()


BOOT_SLOTS = BootSlots()


def default_boot_slots(host_cpus: int) -> int:
    """One emulated boot per host core: measured, 2 at once on 2 cores take ~90 s each, 4 at once
    ~220 s each (more CPU per boot, not less: they contend)."""
    return max(1, host_cpus)
