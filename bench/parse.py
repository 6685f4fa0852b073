"""Several clients' runs (each a `RunResult`, filled by its tool's parser in loadtools/) combined into
numbers that mean what their names say. Pure functions, tested on real output."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from loadtools.base import ParseError, RunResult

__all__ = ["ParseError", "RunResult", "combine", "percentile_us"]

PERCENTILES = (50.0, 75.0, 90.0, 99.0)


def merge(histograms: list[dict[int, int]]) -> dict[int, int]:
    merged: dict[int, int] = {}
    for h in histograms:
        for value, count in h.items():
            merged[value] = merged.get(value, 0) + count
    return merged


def percentile_us(hist: dict[int, int], p: float, rank: Callable[[int, float], int]) -> int:
    """The value at the tool's rank of p% among all requests in the histogram."""
    n = sum(hist.values())
    if n == 0:
        raise ValueError("an empty latency histogram")
    wanted, seen = rank(n, p), 0
    for value in sorted(hist):
        seen += hist[value]
        if seen >= wanted:
            return value
    return max(hist)


@dataclass(frozen=True)
class Placed:
    """A client's run placed on the host's clock: when it started there, and how sure that is."""

    run: RunResult
    client: str
    start_s: float  # host clock (s) at the tool's start: the client's mark minus its clock offset
    offset_error_s: float  # half the round trip of the offset measurement


def combine(placed: list[Placed], rank: Callable[[int, float], int], grid_pct: float = 0.0) -> dict:
    """Several clients at once, as true numbers.

    - total requests: those completed (what was asked is kept beside it by the runner);
    - requests/s: the completed requests over the common wall-clock window, from the start of the
      first client to the end of the last (each client's start skew recorded), not a sum of rates;
    - the seed's "Latency (ms)": 1000 / that rate, the time per request across all concurrent ones;
    - percentiles: of every request of every client, from their merged latency distributions, not
      the maximum of each client's percentile: exact for a per-request histogram; for a tool that
      gives points `grid_pct` apart (wrk), with the bounds the true value lies within.
    """
    if not placed:
        raise ValueError("no runs to combine")
    runs = [p.run for p in placed]
    first = min(p.start_s for p in placed)
    window = max(p.start_s + p.run.duration_s for p in placed) - first
    completed = sum(r.complete_requests for r in runs)
    rps = completed / window if window > 0 else 0.0
    hist = merge([r.latency_histogram_us for r in runs])
    if sum(hist.values()) == 0 and completed:
        raise ParseError("the clients' outputs hold no latency histogram (the load tool's per-request data)")
    received_kib = sum(r.transfer_rate_kbps * r.duration_s for r in runs)
    return {
        "clients": len(runs),
        "tool": runs[0].tool,
        "keepalive": runs[0].keepalive,
        "concurrency": sum(r.concurrency for r in runs),
        "total_requests": completed,
        "failed_requests": sum(r.failed_requests for r in runs),
        "non_2xx_responses": sum(r.non_2xx_responses for r in runs),
        "window_s": round(window, 3),
        "start_skew_ms": {p.client: round((p.start_s - first) * 1000, 1) for p in placed},
        "window_error_ms": round(2000 * max(p.offset_error_s for p in placed), 1) if len(placed) > 1 else 0.0,
        "requests_per_second": round(rps, 2),
        "latency_ms": round(1000.0 / rps, 3) if rps else None,
        "time_per_request_ms": round(
            sum(r.time_per_request_ms * r.complete_requests for r in runs) / max(1, completed), 3
        ),
        "transfer_rate_kbps": round(received_kib / window, 2) if window > 0 else 0.0,
        "latency_percentiles_ms": (
            {f"p{p:g}": round(percentile_us(hist, p, rank) / 1000, 3) for p in PERCENTILES} if hist else {}
        ),
        "latency_percentile_bounds_ms": (
            {
                f"p{p:g}": [
                    round(percentile_us(hist, max(p - grid_pct, 0.0), rank) / 1000, 3),
                    round(percentile_us(hist, min(p + grid_pct, 100.0), rank) / 1000, 3),
                ]
                for p in PERCENTILES
            }
            if hist and grid_pct
            else {}
        ),
    }
