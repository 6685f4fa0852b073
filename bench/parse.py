"""Load-tool output into numbers: ApacheBench (ab) and wrk. Pure functions, tested on real output."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field


class ParseError(ValueError):
    pass


@dataclass
class RunResult:
    """One load-tool run on one client, in the units the seed's table uses."""

    tool: str
    concurrency: int
    complete_requests: int
    failed_requests: int
    non_2xx_responses: int
    requests_per_second: float
    time_per_request_ms: float  # mean, per request (ab's first "Time per request")
    time_per_request_all_ms: float  # mean, across all concurrent requests (the seed's "Latency")
    transfer_rate_kbps: float  # KiB/s received
    document_length: int
    duration_s: float
    latency_percentiles_ms: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def _number(pattern: str, text: str, what: str, cast=float):
    m = re.search(pattern, text, re.MULTILINE)
    if not m:
        raise ParseError(f"no {what} in the output")
    return cast(m.group(1))


def parse_ab(text: str) -> RunResult:
    if "Requests per second" not in text:
        tail = text.strip().splitlines()[-3:]
        raise ParseError("ab did not finish: " + " | ".join(tail))
    non_2xx = re.search(r"^Non-2xx responses:\s+(\d+)", text, re.MULTILINE)
    percentiles = {f"p{m.group(1)}": float(m.group(2)) for m in re.finditer(r"^\s+(\d+)%\s+(\d+)", text, re.MULTILINE)}
    return RunResult(
        tool="ab",
        concurrency=_number(r"^Concurrency Level:\s+(\d+)", text, "concurrency level", int),
        complete_requests=_number(r"^Complete requests:\s+(\d+)", text, "complete requests", int),
        failed_requests=_number(r"^Failed requests:\s+(\d+)", text, "failed requests", int),
        non_2xx_responses=int(non_2xx.group(1)) if non_2xx else 0,
        requests_per_second=_number(r"^Requests per second:\s+([\d.]+)", text, "requests per second"),
        time_per_request_ms=_number(r"^Time per request:\s+([\d.]+) \[ms\] \(mean\)$", text, "time per request"),
        time_per_request_all_ms=_number(
            r"^Time per request:\s+([\d.]+) \[ms\] \(mean, across all", text, "time per request across all"
        ),
        transfer_rate_kbps=_number(r"^Transfer rate:\s+([\d.]+)", text, "transfer rate"),
        document_length=_number(r"^Document Length:\s+(\d+)", text, "document length", int),
        duration_s=_number(r"^Time taken for tests:\s+([\d.]+)", text, "time taken"),
        latency_percentiles_ms=percentiles,
    )


_WRK_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}
_WRK_BYTES = {"B": 1 / 1024, "KB": 1.0, "MB": 1024.0, "GB": 1024.0 * 1024}


def _wrk_ms(value: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if not m:
        raise ParseError(f"wrk time {value!r}")
    return float(m.group(1)) * _WRK_UNITS_MS[m.group(2)]


def parse_wrk(text: str, concurrency: int, document_length: int) -> RunResult:
    """wrk --latency output; wrk counts connections (-c), requests and socket errors itself."""
    if "Requests/sec" not in text:
        raise ParseError("wrk did not finish: " + " | ".join(text.strip().splitlines()[-3:]))
    m = re.search(r"^\s+(\d+) requests in ([\d.]+)(us|ms|s|m),", text, re.MULTILINE)
    if not m:
        raise ParseError("no request count in the wrk output")
    requests = int(m.group(1))
    duration_s = _wrk_ms(m.group(2) + m.group(3)) / 1000
    rps = _number(r"^Requests/sec:\s+([\d.]+)", text, "Requests/sec")
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


def combine(runs: list[RunResult]) -> dict:
    """Several clients at once, combined as the seed did: requests/s, concurrency and totals summed.

    The combined latency is the time per request across all concurrent requests of all clients
    (1000 / summed requests per second), the seed's "Latency (ms)" column.
    """
    if not runs:
        raise ValueError("no runs to combine")
    rps = sum(r.requests_per_second for r in runs)
    return {
        "clients": len(runs),
        "concurrency": sum(r.concurrency for r in runs),
        "total_requests": sum(r.complete_requests for r in runs),
        "failed_requests": sum(r.failed_requests for r in runs),
        "non_2xx_responses": sum(r.non_2xx_responses for r in runs),
        "requests_per_second": round(rps, 2),
        "latency_ms": round(1000.0 / rps, 3) if rps else None,
        "time_per_request_ms": round(max(r.time_per_request_ms for r in runs), 3),
        "transfer_rate_kbps": round(sum(r.transfer_rate_kbps for r in runs), 2),
        "latency_percentiles_ms": {
            k: max(r.latency_percentiles_ms.get(k, 0.0) for r in runs) for k in runs[0].latency_percentiles_ms
        },
    }
