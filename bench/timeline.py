"""The fault run's record, second by second: samplers on the guests, and what their lines mean.

Pure. During the fault run a small loop on each VM prints `@ <its clock>` and then its lines every
`period` seconds (the LB every half second: its rotation is what eject and readmit are read from):
- the LB: the mode's rotation (lbmodes: a line per web, `<address or name> <in 0|1> <sent so far>`);
- each client: its TCP counters (`tcp <active opens> <attempt fails> <established resets>` and
  `synretrans <n>`): connections tried, refused or timed out, reset, SYNs sent again;
- each web: nginx's `requests` counter (`served <n>`), which its own reading adds one to.
The runner puts every sample on the host's clock (each VM's offset, bench/clocks.py) and this module
turns them into seconds of the run and the fault's times.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Iterable
from dataclasses import dataclass

SAMPLES = "/tmp/l2dsr-timeline.txt"
CLIENT = (
    "awk '/^Tcp: [0-9]/ {print \"tcp\", $6, $8, $9}' /proc/net/snmp; "
    'awk \'/^TcpExt:/ {if (!h) {for (i = 1; i <= NF; i++) if ($i == "TCPSynRetrans") c = i; h = 1} '
    'else print "synretrans", $c}\' /proc/net/netstat'
)
WEB = "curl -s --max-time 1 http://127.0.0.1/l2dsr-status | awk 'NR == 3 {print \"served\", $3}'"


def sampler(command: str, period_s: float, seconds: int) -> str:
    """Start `command` every `period_s` for `seconds`, in the background, as root (the LB's
    ipvsadm and HAProxy's socket need it); its lines in SAMPLES. It stops by itself."""
    loop = f'while :; do echo "@ $(date +%s.%N)"; {command}; sleep {period_s}; done\n'
    script = base64.b64encode(loop.encode()).decode()
    return (
        f"echo {script} | base64 -d > /tmp/l2dsr-sampler.sh; "
        f"sudo nohup timeout {seconds} sh /tmp/l2dsr-sampler.sh > {SAMPLES} 2>&1 < /dev/null &"
    )


@dataclass(frozen=True)
class Sample:
    t: float  # seconds since the load started, on the host's clock
    lines: tuple[str, ...]


@dataclass(frozen=True)
class Clock:
    """A guest's clock against the host's: its offset (guest - host) measured at two moments of the
    host's, before and after the run, and taken as linear in between (an emulated guest under full
    load falls behind by seconds: one offset from before the run would misplace its readings)."""

    at1: float
    offset1: float
    at2: float
    offset2: float
    paused_until: float = 0.0  # a VM paused (kill-web): its clock stood still until then (host), one offset each side

    def host(self, guest_t: float) -> float:
        host_t = guest_t - self.offset1
        if self.paused_until:  # after the resume, its clock went on from where it stood
            return guest_t - self.offset2 if guest_t - self.offset2 >= self.paused_until else host_t
        if self.at2 > self.at1:
            offset = self.offset1 + (self.offset2 - self.offset1) * (host_t - self.at1) / (self.at2 - self.at1)
            host_t = guest_t - offset
        return host_t


SAME = Clock(0.0, 0.0, 0.0, 0.0)  # a clock taken as the host's


def samples(text: str, clock: Clock, t0: float) -> list[Sample]:
    """A sampler's output; its clock mapped to the host's, in seconds since `t0` (host)."""
    found: list[Sample] = []
    t: float | None = None
    lines: list[str] = []
    for line in [*text.splitlines(), "@ end"]:
        if line.startswith("@ "):
            if t is not None:
                found.append(Sample(t, tuple(lines)))
            stamp = line[2:].strip()
            t = clock.host(float(stamp)) - t0 if stamp.replace(".", "", 1).isdigit() else None
            lines = []
        elif line.strip():
            lines.append(line.strip())
    return found


def rotation(sample: Sample, keys: dict[str, str]) -> dict[str, tuple[bool, int]]:
    """The LB's lines: web name -> (in rotation, sent so far); `keys` maps an address or name to the web."""
    out = {}
    for line in sample.lines:
        parts = line.split()
        if len(parts) == 3 and parts[0] in keys and parts[2].isdigit():
            out[keys[parts[0]]] = (parts[1] == "1", int(parts[2]))
    return out


def counters(sample: Sample) -> dict[str, int]:
    """A client's or web's lines as named counters (tcp: opens, fails, resets; synretrans; served)."""
    out: dict[str, int] = {}
    for line in sample.lines:
        parts = line.split()
        if parts[0] == "tcp" and len(parts) == 4 and all(p.isdigit() for p in parts[1:]):
            out.update(opens=int(parts[1]), attempt_fails=int(parts[2]), resets=int(parts[3]))
        elif parts[0] in ("synretrans", "served") and len(parts) == 2 and parts[1].isdigit():
            out[parts[0]] = int(parts[1])
    return out


def per_second(series: Iterable[tuple[float, int]], seconds: int, restarts: bool = False, own: int = 0) -> list[int]:
    """A counter read at times t (seconds of the run) -> its increase in each second [k, k+1).

    `own`: what each reading adds itself (nginx counts the status request); `restarts`: a counter
    that fell started again from zero (nginx started anew), so its new value is the increase. The
    readings come when a loaded guest gets to them (1 s apart, or 2): the total is interpolated
    linearly at each second's boundary, so a late reading spreads its increase over the seconds it
    covers instead of piling it into one.
    """
    points: list[tuple[float, float]] = []
    total, last = 0.0, None
    for t, value in sorted(series):
        if last is not None:
            grew = value - last if value >= last else (value if restarts else 0)
            total += max(0, grew - own)
        points.append((t, total))
        last = value

    def at(x: float) -> float:
        if not points or x <= points[0][0]:
            return 0.0 if not points else points[0][1]
        for (t1, v1), (t2, v2) in zip(points, points[1:], strict=False):
            if t1 <= x <= t2:
                return v1 + (v2 - v1) * (x - t1) / (t2 - t1) if t2 > t1 else v2
        return points[-1][1]

    edges = [round(at(k)) for k in range(seconds + 1)]
    return [edges[k + 1] - edges[k] for k in range(seconds)]


def reading_gap(found: list[Sample], seconds: int) -> float:
    """The longest time between two readings that bound part of the run [0, seconds]: per_second
    spreads what a counter gained over the time between its readings, so a second's count can hold
    an increase from this far before or after it (a loaded guest reads every 2 s, not every 1)."""
    times = sorted(x.t for x in found)
    gaps = [b - a for a, b in itertools.pairwise(times) if b > 0 and a < seconds]
    return round(max(gaps, default=0.0), 2)


@dataclass(frozen=True)
class FaultTimes:
    eject_s: float | None  # after the fault, when the LB took the web out; None: it never did
    readmit_s: float | None  # after the restore, when the LB had it back; None: not within the run
    sent_while_down: int  # what the LB still sent the web between the fault and the restore


def fault_times(lb: list[Sample], keys: dict[str, str], web: str, fault_t: float, restore_t: float) -> FaultTimes:
    """From the LB's rotation over the run: when `web` left it after `fault_t` and came back after `restore_t`."""
    eject = readmit = None
    sent_at_fault = sent_at_restore = None
    for s in sorted(lb, key=lambda s: s.t):
        state = rotation(s, keys).get(web, (False, -1))
        if s.t <= fault_t and state[1] >= 0:
            sent_at_fault = state[1]
        if s.t <= restore_t and state[1] >= 0:
            sent_at_restore = state[1]
        if eject is None and fault_t <= s.t < restore_t and not state[0]:
            eject = s.t - fault_t
        if readmit is None and s.t >= restore_t and state[0]:
            readmit = s.t - restore_t
    sent = (sent_at_restore - sent_at_fault) if sent_at_fault is not None and sent_at_restore is not None else 0
    return FaultTimes(
        round(eject, 1) if eject is not None else None, round(readmit, 1) if readmit is not None else None, max(0, sent)
    )


def in_rotation(lb: list[Sample], keys: dict[str, str], web: str, seconds: int) -> list[int]:
    """Per second, 1 if the LB had `web` in rotation at the last reading up to the second's end (a
    second without a reading keeps the state before it; 0 before the first reading)."""
    readings = sorted((s.t, rotation(s, keys).get(web, (False, 0))[0]) for s in lb)
    out, state, i = [], False, 0
    for k in range(seconds):
        while i < len(readings) and readings[i][0] < k + 1:
            state = readings[i][1]
            i += 1
        out.append(1 if state else 0)
    return out
