"""Progress lines for long host steps, with the full output of each step in a log file, and
independent steps run at once (`in_parallel`): the first that fails stops the others."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any


class StepFailed(RuntimeError):
    pass


class StepStopped(StepFailed):
    """A step ended because another one failed: not the error to report."""


_stop = threading.Event()  # set when a step of an `in_parallel` group failed
_running: set[Any] = set()  # what _stop_all ends: anything with the `pid` of a process group leader
_active: dict[str, float] = {}  # the steps running now, by what they are: when each started
_lock = threading.Lock()
TICK_S = 30  # a line naming the steps still running, this often, while steps run at once


def stop_all() -> None:
    _stop.set()
    with _lock:
        for proc in list(_running):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)  # the step's whole process group (debootstrap, go)


def in_parallel(steps: Mapping[str, Callable[[], Any]]) -> dict[str, Any]:
    """Run independent steps at once, each in a thread; their results by name. The first step that
    fails stops the others (their processes are ended) and its error is the one raised."""
    results: dict[str, Any] = {}
    failures: list[BaseException] = []

    def run(name: str, step: Callable[[], Any]) -> None:
        try:
            results[name] = step()
        except BaseException as e:  # noqa: BLE001 (reported below, in the caller's thread)
            if not isinstance(e, StepStopped):
                failures.append(e)
                stop_all()

    threads = [threading.Thread(target=run, args=item, name=item[0], daemon=True) for item in steps.items()]
    _stop.clear()
    next_tick = time.monotonic() + TICK_S
    try:
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.5)
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + TICK_S
                    say(still_running())
    except KeyboardInterrupt:
        stop_all()
        raise
    finally:
        for t in threads:
            t.join(30)
        _stop.clear()
    if failures:
        raise failures[0]
    return results


def still_running() -> str:
    now = time.monotonic()
    with _lock:
        steps = ", ".join(f"{what} ({now - start:.0f} s)" for what, start in _active.items())
    return f"still running: {steps or 'nothing'}"


def say(message: str) -> None:
    print(f"[l2dsr] {message}", file=sys.stderr, flush=True)


def run_logged(
    what: str,
    argv: Sequence[str],
    log: Path,
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    nice: int = 0,
) -> float:
    """Run one long step, appending its output to `log`; one line when it starts and ends. `nice`:
    a step off the critical path yields the CPU to one on it (it still gets what is idle)."""
    argv = ["nice", "-n", str(nice), *argv] if nice else list(argv)
    if _stop.is_set():
        raise StepStopped(f"{what}: not started, another step failed")
    log.parent.mkdir(parents=True, exist_ok=True)
    say(f"{what} ... (log: {log})")
    start = time.monotonic()
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(argv)}\n")
        out.flush()
        proc = subprocess.Popen(
            list(argv), stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env, start_new_session=True
        )
        rc = _wait(what, proc, proc.wait, start)
    return _ended(what, rc, start, log)


def follow(what: str, pid: int, log: Path) -> float:
    """A step that ./labctl started before this process existed (the engine's build, beside the
    virtualenv), in its own process group, as a child of this process: waited for, ended with the
    others on a failure, and reported as run_logged reports its own."""
    if _stop.is_set():
        os.killpg(pid, signal.SIGTERM)
        raise StepStopped(f"{what}: ended, another step failed")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        # It ended before this process started, and ./labctl's shell collected it (a CLI already
        # built ends at once): its outcome is unknown here, and the caller looks for the CLI itself.
        return 0.0
    say(f"{what} (started beside the virtualenv) ... (log: {log})")
    start = time.monotonic()

    def wait() -> int:
        try:
            return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        except ChildProcessError:  # ended and collected between the check above and here
            return 0

    return _ended(what, _wait(what, _Pid(pid), wait, start), start, log)


class _Pid:
    def __init__(self, pid: int):
        self.pid = pid


def _wait(what: str, proc: Any, wait: Callable[[], int], start: float) -> int:
    with _lock:
        _running.add(proc)
        _active[what] = start
    try:
        return wait()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # Ctrl-C: the step goes with us
        raise
    finally:
        with _lock:
            _running.discard(proc)
            _active.pop(what, None)


def _ended(what: str, rc: int, start: float, log: Path) -> float:
    took = time.monotonic() - start
    if rc != 0 and _stop.is_set():
        raise StepStopped(f"{what}: stopped after {took:.0f} s, another step failed")
    if rc != 0:
        raise StepFailed(f"{what} failed (exit {rc}) after {took:.0f} s; see {log}")
    say(f"{what}: done in {took:.0f} s")
    return took
