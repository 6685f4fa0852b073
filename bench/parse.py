"""A load-tool run as numbers (`RunResult`, filled by each tool's parser in bench/loadtools/), and
several clients' runs combined. Pure functions, tested on real output."""

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


def number(pattern: str, text: str, what: str, cast=float):
    m = re.search(pattern, text, re.MULTILINE)
    if not m:
        raise ParseError(f"no {what} in the output")
    return cast(m.group(1))


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
