"""wrk: keeps its connections alive and runs for a duration (sized from the requests asked)."""

from __future__ import annotations

import re

from bench.loadtools.base import LoadTool
from bench.parse import ParseError, RunResult, number

NAME = "wrk"


def command(url: str, concurrency: int, requests: int) -> str:
    # wrk runs for a duration: sized to about the requests asked for at a modest rate.
    return f"ulimit -n 1048576; wrk -t1 -c{concurrency} -d{max(5, requests // 200)}s --latency {url} 2>&1"


_WRK_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}
_WRK_BYTES = {"B": 1 / 1024, "KB": 1.0, "MB": 1024.0, "GB": 1024.0 * 1024}


def _wrk_ms(value: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if not m:
        raise ParseError(f"wrk time {value!r}")
    return float(m.group(1)) * _WRK_UNITS_MS[m.group(2)]


def parse(text: str, concurrency: int, document_length: int) -> RunResult:
    """wrk --latency output; wrk counts connections (-c), requests and socket errors itself."""
    if "Requests/sec" not in text:
        raise ParseError("wrk did not finish: " + " | ".join(text.strip().splitlines()[-3:]))
    m = re.search(r"^\s+(\d+) requests in ([\d.]+)(us|ms|s|m),", text, re.MULTILINE)
    if not m:
        raise ParseError("no request count in the wrk output")
    requests = int(m.group(1))
    duration_s = _wrk_ms(m.group(2) + m.group(3)) / 1000
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
        concurrency=concurrency,
        complete_requests=requests,
        failed_requests=sum(int(x) for x in errors.groups()) if errors else 0,
        non_2xx_responses=int(non_2xx.group(1)) if non_2xx else 0,
        requests_per_second=rps,
        time_per_request_ms=_wrk_ms(latency_avg.group(1)) if latency_avg else 0.0,
        time_per_request_all_ms=1000.0 / rps if rps else 0.0,
        transfer_rate_kbps=float(transfer.group(1)) * _WRK_BYTES[transfer.group(2)] if transfer else 0.0,
        document_length=document_length,
        duration_s=duration_s,
        latency_percentiles_ms=percentiles,
    )


TOOL = LoadTool(NAME, command, parse)
