"""The clients' clocks against the host's, so that runs on several clients share one time line.

The guests' clocks are set from the host at boot and then drift (no NTP in the lab; under software
emulation by seconds). The offset is measured like NTP does, over one SSH session already set up:
the host writes a line at t0, the client answers with its clock, the host reads it at t1; the
client's clock is taken at (t0 + t1) / 2, within +-(t1 - t0) / 2. The best of a few rounds counts.
"""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass

import runtime
from runtime.ssh import Ssh, SshError
from runtime.vm import VmRef

ROUNDS = 5
EXCHANGE = f"for i in $(seq {ROUNDS}); do echo ready; read x || exit; date +%s%N; done"


@dataclass(frozen=True)
class Offset:
    seconds: float  # client clock - host clock
    error_s: float  # +- this


def best(samples: list[tuple[int, int, int]]) -> Offset:
    """(host t0 ns, client ns, host t1 ns) rounds -> the offset of the round with the shortest trip."""
    t0, client, t1 = min(samples, key=lambda s: s[2] - s[0])
    return Offset((client - (t0 + t1) / 2) / 1e9, (t1 - t0) / 2e9)


def measure(ssh: Ssh, address: str, timeout_s: float = 60) -> Offset:
    proc = subprocess.Popen(
        ssh.argv(address, EXCHANGE), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    timer = threading.Timer(timeout_s, proc.kill)
    timer.start()
    samples = []
    try:
        assert proc.stdin is not None and proc.stdout is not None
        for _ in range(ROUNDS):
            if proc.stdout.readline().strip() != "ready":
                break
            t0 = time.time_ns()
            proc.stdin.write("x\n")
            proc.stdin.flush()
            answer = proc.stdout.readline().strip()
            t1 = time.time_ns()
            if not answer.isdigit():
                break
            samples.append((t0, int(answer), t1))
    except (BrokenPipeError, OSError):
        pass
    finally:
        timer.cancel()
        proc.kill()
        _, err = proc.communicate()
    if not samples:
        outcome = "it did not answer with its clock"
        raise SshError(f"{address}: {outcome}", address, EXCHANGE, outcome, err or "")
    return best(samples)


def measure_all(ssh: Ssh, vms: tuple[VmRef, ...] | list[VmRef]) -> tuple[dict[str, Offset], float]:
    """Every VM's clock against the host's, at once, and when (the host's clock) they were measured."""
    at = time.time()
    found = runtime.at_once(lambda v: measure(ssh, v.address), list(vms))
    return {v.name: o for v, o in zip(vms, found, strict=True)}, (at + time.time()) / 2
