"""ApacheBench (ab), the seed's load tool: a connection per request, a fixed number of requests."""

from __future__ import annotations

import re

from bench.loadtools.base import LoadTool
from bench.parse import ParseError, RunResult, number

NAME = "ab"


def command(url: str, concurrency: int, requests: int) -> str:
    return f"ulimit -n 1048576; ab -c {concurrency} -n {requests} {url} 2>&1"  # the seed's command


def parse(text: str, concurrency: int = 0, document_length: int = 0) -> RunResult:
    """ab's report; it states the concurrency and document length itself (the arguments are unused)."""
    if "Requests per second" not in text:
        tail = text.strip().splitlines()[-3:]
        raise ParseError("ab did not finish: " + " | ".join(tail))
    non_2xx = re.search(r"^Non-2xx responses:\s+(\d+)", text, re.MULTILINE)
    percentiles = {f"p{m.group(1)}": float(m.group(2)) for m in re.finditer(r"^\s+(\d+)%\s+(\d+)", text, re.MULTILINE)}
    return RunResult(
        tool="ab",
        concurrency=number(r"^Concurrency Level:\s+(\d+)", text, "concurrency level", int),
        complete_requests=number(r"^Complete requests:\s+(\d+)", text, "complete requests", int),
        failed_requests=number(r"^Failed requests:\s+(\d+)", text, "failed requests", int),
        non_2xx_responses=int(non_2xx.group(1)) if non_2xx else 0,
        requests_per_second=number(r"^Requests per second:\s+([\d.]+)", text, "requests per second"),
        time_per_request_ms=number(r"^Time per request:\s+([\d.]+) \[ms\] \(mean\)$", text, "time per request"),
        time_per_request_all_ms=number(
            r"^Time per request:\s+([\d.]+) \[ms\] \(mean, across all", text, "time per request across all"
        ),
        transfer_rate_kbps=number(r"^Transfer rate:\s+([\d.]+)", text, "transfer rate"),
        document_length=number(r"^Document Length:\s+(\d+)", text, "document length", int),
        duration_s=number(r"^Time taken for tests:\s+([\d.]+)", text, "time taken"),
        latency_percentiles_ms=percentiles,
    )


TOOL = LoadTool(NAME, command, parse)
