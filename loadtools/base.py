"""The contract of a load tool: how a client runs it, its warm-up, and how to read what it printed.

What every tool prints, so that several clients combine into true numbers (bench/parse.py):
- its own report (requests, duration, its own percentiles), as the seed read it;
- `l2dsr-start <ns>`: the client's clock when the tool started (the runner maps it to the host's);
- its latency distribution between `l2dsr-latency-us` and `l2dsr-latency-end`, `<microseconds>
  <weight>` lines: from ab's per-request data (`-g`: every request, in whole milliseconds, exact), or
  wrk's per-mille points weighted by its request count (wrk.py says why, and its error bound).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field

from lab.memory import mib


class ParseError(ValueError):
    pass


@dataclass
class RunResult:
    """One load-tool run on one client, in the units the seed's table uses."""

    tool: str
    keepalive: bool
    concurrency: int
    complete_requests: int
    failed_requests: int
    non_2xx_responses: int
    requests_per_second: float  # the tool's own
    time_per_request_ms: float  # mean, per request (ab's first "Time per request")
    time_per_request_all_ms: float  # mean, across all concurrent requests (the seed's "Latency")
    transfer_rate_kbps: float  # KiB/s received
    document_length: int
    duration_s: float  # the tool's own
    latency_percentiles_ms: dict[str, float] = field(default_factory=dict)  # the tool's own
    latency_histogram_us: dict[int, int] = field(default_factory=dict)  # microseconds -> requests

    def as_dict(self) -> dict:
        """For the saved record: the histogram stays in the raw output, not in every JSON."""
        d = asdict(self)
        del d["latency_histogram_us"]
        return d


def number(pattern: str, text: str, what: str, cast=float):
    m = re.search(pattern, text, re.MULTILINE)
    if not m:
        raise ParseError(f"no {what} in the output")
    return cast(m.group(1))


SCHEME_PORTS = {"http": 80, "https": 443}
HISTOGRAM_START, HISTOGRAM_END, CLOCK_START = "l2dsr-latency-us", "l2dsr-latency-end", "l2dsr-start"


@dataclass(frozen=True)
class Load:
    """What one client is asked for in one run."""

    url: str
    concurrency: int
    requests: int
    keepalive: bool  # l2dsr:benchKeepAlive; false (the seed's ab): a connection per request
    seconds: int = 0  # a run of this length instead (the fault run): `requests` is then only a ceiling
    rate: float = 0.0  # open-loop tools: requests/s sent on a fixed schedule; `concurrency` is then the most in flight


@dataclass(frozen=True)
class LoadTool:
    name: str
    command: Callable[[Load], str]  # the tool's shell command on a client: its report, then its histogram
    parse: Callable[[str, Load, int], RunResult]  # (output, load, document length) -> numbers
    # The tool's own percentile rank (1-based) of p% of n samples, so that one client's merged
    # percentiles are exactly the tool's own.
    rank: Callable[[int, float], int]
    grid_pct: float  # 0: the histogram is per request (exact); else its points are this many percent apart
    # The facts the rest of the lab reads, declared here only:
    # image family -> the distribution packages that provide the tool; a family it lacks cannot run it
    packages: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # or, for a tool no distribution packages: its Go module@version, which the builtin image is built with
    go_module: str = ""
    rate_per_vcpu: float = 0.0  # requests/s one client vCPU drives, measured under emulation (bench/cost.py)
    max_connections_per_client: int = 0  # the tool's own limit on its concurrency; 0: none
    memory_base_mib: int = 8  # a client's memory for the tool itself (lab/memory.py) ...
    memory_bytes_per_connection: int = 16384  # ... and per connection: a buffer and its state
    # a tool that runs for a duration: its length (s) for the requests asked; None: it runs to a count
    duration_s: Callable[[int], int] | None = None
    # open loop: it sends at a rate it is given, whatever the answers (the capacity search's tool); closed
    # loop: a number of connections, each sending its next request when the last is answered (benchTool)
    open_loop: bool = False

    def client_memory(self, connections: int) -> tuple[str, int]:
        """(what, MiB) a client needs for the tool beyond its OS (lab/memory.py adds the OS's)."""
        return f"{self.name} {connections} connections", self.memory_base_mib + mib(
            connections * self.memory_bytes_per_connection
        )

    def run(self, load: Load, start_ns: int = 0) -> str:
        """The measured run: waiting for `start_ns` on the client's clock (every client is given the
        same moment of the host's, so they start together, whenever their SSH sessions came up),
        the client's clock at the start, then the tool."""
        wait = f"while [ $(date +%s%N) -lt {start_ns} ]; do sleep 0.005; done; " if start_ns else ""
        return f"{wait}echo {CLOCK_START} $(date +%s%N); {self.command(load)}"

    def warmup(self, load: Load) -> str:
        """A short run (caches, ARP, TCP state) with the tool itself, its output dropped: before the first
        measured run and the first after the LB changed (the runs in between keep the paths warm)."""
        small = min(load.concurrency, 10)
        if self.open_loop:  # two seconds at a low rate
            return (
                self.command(Load(load.url, small, 0, load.keepalive, seconds=2, rate=min(load.rate, 20.0)))
                + " >/dev/null"
            )
        return self.command(Load(load.url, small, max(min(load.requests, 200), small), load.keepalive)) + " >/dev/null"


def histogram(text: str) -> dict[int, int]:
    """The `<microseconds> <count>` lines between the markers; empty when the tool printed none."""
    _, found, rest = text.partition(HISTOGRAM_START + "\n")
    if not found:
        return {}
    body, _, _ = rest.partition(HISTOGRAM_END)
    counts: dict[int, int] = {}
    for line in body.splitlines():
        if line.strip():
            value, count = line.split()
            counts[int(float(value))] = counts.get(int(float(value)), 0) + int(count)
    return counts


def clock_start(text: str) -> int:
    """The client's clock (ns) at the tool's start, from the `l2dsr-start` line (without it the run
    cannot be placed on the common window: an error, not a start at 0)."""
    for line in text.splitlines():
        if line.startswith(CLOCK_START + " "):
            return int(line.split()[1])
    raise ParseError(f"no `{CLOCK_START}` line: the client's clock at the tool's start is unknown")


def url(scheme: str, vip: str, path: str = "/dummy_file") -> str:
    return f"{scheme}://{vip}{path}"


def port(scheme: str) -> int:
    return SCHEME_PORTS[scheme]
