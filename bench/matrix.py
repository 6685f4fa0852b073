"""The benchmark matrix and its statistics: pure functions.

A step is one (LB threads, concurrency, requests) point, run `repeats` times. Concurrency and
requests are totals over the clients, as in the seed's table, split as evenly as possible.
Repeats are reported as median with min and max.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    threads: int
    concurrency: int
    requests: int
    repeat: int  # 1-based


def steps(
    thread_values: tuple[int, ...], concurrency: tuple[int, ...], requests: tuple[int, ...], repeats: int
) -> list[Step]:
    """Threads outermost (changing them retunes the LB), then concurrency, then repeats.

    The thread values are the mode's (lbmodes/): HAProxy's nbthread steps, or one row per point for
    IPVS, which the seed reported as one thread.
    """
    return [
        Step(t, c, n, r)
        for t in thread_values
        for c, n in zip(concurrency, requests, strict=True)
        for r in range(1, repeats + 1)
    ]


def split(total: int, parts: int) -> list[int]:
    """`total` over `parts` clients, the remainder to the first ones: split(10, 3) == [4, 3, 3]."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3), "max": round(max(values), 3)}


_COUNT = re.compile(r"(?<=[ (+-])[\d,.]+%?")  # the numbers of a flag, not those of a name (web01)


def repeated_flags(runs: list[list[str]]) -> list[str]:
    """A step's flags over its repeats: each kind once (the same text but for its numbers), as the
    last run that raised it said it, with how many of the runs did when there were several."""
    seen: dict[str, tuple[str, int]] = {}
    for flags in runs:
        for flag in flags:
            key = _COUNT.sub("#", flag)
            seen[key] = (flag, seen.get(key, ("", 0))[1] + 1)
    return sorted(f if len(runs) == 1 else f"{f} ({n} of {len(runs)} runs)" for f, n in seen.values())


def summarize(runs: list[dict]) -> list[dict]:
    """One row per step: requests/s, latency and the merged percentiles as median/min/max over its
    repeats; completed requests (median) beside the asked; flags kept."""
    rows: dict[tuple, list[dict]] = {}
    for run in runs:
        rows.setdefault((run["lb_threads"], run["concurrency"], run["total_requests_asked"]), []).append(run)
    out = []
    for (threads, concurrency, asked), group in rows.items():
        rps = spread([r["requests_per_second"] for r in group])
        latency = spread([r["latency_ms"] for r in group])
        percentiles = {
            k: statistics.median(r["latency_percentiles_ms"][k] for r in group)
            for k in group[0].get("latency_percentiles_ms", {})
        }
        out.append(
            {
                "mode": group[0]["mode"],
                "tool": group[0]["tool"],
                "keepalive": group[0].get("keepalive", False),
                "scheme": group[0].get("scheme", "http"),
                "clients": group[0].get("clients", 1),
                "lb_threads": threads,
                "concurrency": concurrency,
                "total_requests": int(statistics.median(r["total_requests"] for r in group)),
                "total_requests_asked": asked,
                "file_size_bytes": group[0]["file_size_bytes"],
                "repeats": len(group),
                "requests_per_second": rps["median"],
                "requests_per_second_min": rps["min"],
                "requests_per_second_max": rps["max"],
                "latency_ms": latency["median"],
                "latency_ms_min": latency["min"],
                "latency_ms_max": latency["max"],
                "latency_percentiles_ms": percentiles,
                "failed_requests": sum(r["failed_requests"] for r in group),
                "non_2xx_responses": sum(r["non_2xx_responses"] for r in group),
                "lb_response_share": round(statistics.median(r["lb_response_share"] for r in group), 4),
                "lb_bytes_per_request": round(statistics.median(r["lb_bytes_per_request"] for r in group), 1),
                "flags": repeated_flags([r["flags"] for r in group]),
            }
        )
    return out
