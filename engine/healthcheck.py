"""Our plugins end when their engine is gone, as Pulumi's own do (`rpcutil.Healthcheck`).

The CLI starts the language host and the provider host with its engine's address and ends them when
it is done; killed (`kill -9`, an OOM kill, a closed terminal), it ends nothing, and they would run
on, orphaned, holding the stack's guests busy. Each watches the engine's address instead: once it
has refused connections for `misses` checks in a row, the host cleans up what it can in `grace_s`
(the benchmark puts the guests back on cancel) and exits.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import time
from collections.abc import Callable

PERIOD_S = 1.0
MISSES = 3


def answers(address: str, timeout: float = 2.0) -> bool:
    """Does anything accept a TCP connection at host:port? (The engine's gRPC server, while it lives.)"""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def engine_gone(check: Callable[[], bool], misses: int = MISSES, period_s: float = PERIOD_S) -> None:
    """Return once `check` has failed `misses` times in a row (one check each `period_s`)."""
    missed = 0
    while missed < misses:
        missed = 0 if check() else missed + 1
        if missed < misses:
            time.sleep(period_s)


def watch(address: str, cleanup: Callable[[], None] = lambda: None, grace_s: float = 20.0) -> threading.Thread:
    """In a daemon thread: when the engine at `address` is gone, `cleanup()` (at most `grace_s`), then exit."""

    def run() -> None:
        engine_gone(lambda: answers(address))
        # The engine held the other end of stderr: a write may fail now (EPIPE), and must not end this
        # thread before the exit (a killed engine left both hosts running, their watcher dead).
        with contextlib.suppress(OSError, ValueError):
            print(f"engine at {address} is gone: ending", file=sys.stderr, flush=True)
        try:
            done = threading.Thread(target=cleanup, daemon=True)
            done.start()
            done.join(grace_s)
        finally:
            os._exit(70)

    thread = threading.Thread(target=run, name="engine-healthcheck", daemon=True)
    thread.start()
    return thread
