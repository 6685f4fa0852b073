"""wrk: runs for a duration (sized from the requests asked), its connections kept alive unless
keep-alive is off (then every request says `Connection: close` and wrk reconnects).

Its latency distribution: wrk 4.1's script API gives percentiles, not its buckets (Debian's build
returns the key for `latency[i]`), so a `done()` hook prints the 1,000 per-mille points of its
distribution, each weighted by the client's request count (the last is wrk's maximum: its
percentile(100) reads 0). Merged over clients, a percentile is
exact to that grid: the true value lies between the merged values at p - 0.1 and p + 0.1, which the
results give as its bounds (`GRID_PCT`). wrk times a request from its write to the last byte of the
response (the connect not included); its known limit: a stalled connection sends nothing, so the
waits behind it are not counted."""

from __future__ import annotations

import base64
import math
import re

from loadtools.base import HISTOGRAM_END, HISTOGRAM_START, Load, LoadTool, ParseError, RunResult, histogram, number

NAME = "wrk"
SCRIPT = "/tmp/l2dsr-wrk.lua"
GRID_PCT = 0.1  # the per-mille points: percentiles 0.1, 0.2, ... 100
DONE = f"""done = function(summary, latency, requests)
  io.write("{HISTOGRAM_START}\\n")
  for i = 1, 999 do
    io.write(string.format("%d %d\\n", latency:percentile(i / 10), summary.requests))
  end
  io.write(string.format("%d %d\\n", latency.max, summary.requests))
  io.write("{HISTOGRAM_END}\\n")
end
"""
RATE_GUESS = 200  # requests/s: the duration is the requests asked at this rate (the table shows what completed)


def duration_s(requests: int) -> int:
    return max(5, requests // RATE_GUESS)


def command(load: Load) -> str:
    script = base64.b64encode(DONE.encode()).decode()
    close = "" if load.keepalive else "-H 'Connection: close' "
    return (
        f"echo {script} | base64 -d > {SCRIPT}; ulimit -n 1048576; "
        f"wrk -t1 -c{load.concurrency} -d{load.seconds or duration_s(load.requests)}s --latency {close}-s {SCRIPT} {load.url} 2>&1"
    )


def rank(total: int, p: float) -> int:
    """The first grid point at or above p% of the weighted points (one client: wrk's own percentile p)."""
    return max(1, min(total, math.ceil(total * p / 100 - 1e-9)))


_WRK_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}
_WRK_BYTES = {"B": 1 / 1024, "KB": 1.0, "MB": 1024.0, "GB": 1024.0 * 1024}


def _wrk_ms(value: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if not m:
        raise ParseError(f"wrk time {value!r}")
    return float(m.group(1)) * _WRK_UNITS_MS[m.group(2)]


def parse(text: str, load: Load, document_length: int) -> RunResult:
    """wrk --latency output; wrk counts connections (-c), requests and socket errors itself."""
    if "Requests/sec" not in text:
        raise ParseError("wrk did not finish: " + " | ".join(text.split(HISTOGRAM_START)[0].strip().splitlines()[-3:]))
    m = re.search(r"^\s+(\d+) requests in ([\d.]+)(us|ms|s|m),", text, re.MULTILINE)
    if not m:
        raise ParseError("no request count in the wrk output")
    requests = int(m.group(1))
    duration = _wrk_ms(m.group(2) + m.group(3)) / 1000
    rps = number(r"^Requests/sec:\s+([\d.]+)", text, "Requests/sec")
    transfer = re.search(r"^Transfer/sec:\s+([\d.]+)(B|KB|MB|GB)", text, re.MULTILINE)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    latency_avg = re.search(r"^\s+Latency\s+([\d.]+(?:us|ms|s|m))", text, re.MULTILINE)
    percentiles = {
        f"p{m.group(1)}": _wrk_ms(m.group(2))
        for m in re.finditer(r"^\s+(\d+)%\s+([\d.]+(?:us|ms|s|m))$", text, re.MULTILINE)
    }
    return RunResult(
        tool="wrk",
        keepalive=load.keepalive,
        concurrency=load.concurrency,
        complete_requests=requests,
        failed_requests=sum(int(x) for x in errors.groups()) if errors else 0,
        non_2xx_responses=int(non_2xx.group(1)) if non_2xx else 0,
        requests_per_second=rps,
        time_per_request_ms=_wrk_ms(latency_avg.group(1)) if latency_avg else 0.0,
        time_per_request_all_ms=1000.0 / rps if rps else 0.0,
        transfer_rate_kbps=float(transfer.group(1)) * _WRK_BYTES[transfer.group(2)] if transfer else 0.0,
        document_length=document_length,
        duration_s=duration,
        latency_percentiles_ms=percentiles,
        latency_histogram_us=histogram(text),
    )


TOOL = LoadTool(
    NAME,
    command,
    parse,
    rank,
    GRID_PCT,
    packages={"debian": ("wrk",)},  # not in RHEL's own repositories: a rhel cloud image is refused with wrk
    rate_per_vcpu=700.0,  # it keeps connections
    duration_s=duration_s,
)
