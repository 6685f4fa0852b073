"""ApacheBench (ab), the seed's load tool: a fixed number of requests; a connection per request
unless keep-alive is asked (`-k`). Its per-request data (`-g`) gives the exact latency histogram:
each request from its connect to the last byte of the response, in whole milliseconds."""

from __future__ import annotations

import re

from loadtools.base import HISTOGRAM_END, HISTOGRAM_START, Load, LoadTool, ParseError, RunResult, histogram, number

NAME = "ab"
PER_REQUEST = "/tmp/l2dsr-ab.tsv"  # ab -g: one line per request; column 5 is its total time (ms)


def command(load: Load) -> str:
    keepalive = "-k " if load.keepalive else ""
    # A timed run (the fault run) goes on through refused and reset connections (-r); its -n, after
    # -t, is the ceiling ab allocates its per-request records for.
    timed = f"-r -t {load.seconds} " if load.seconds else ""
    return (
        f"ulimit -n 1048576; ab {keepalive}{timed}-c {load.concurrency} -n {load.requests} -g {PER_REQUEST} {load.url} 2>&1; "
        f"echo {HISTOGRAM_START}; "
        f"awk -F'\\t' 'NR > 1 {{print $5}}' {PER_REQUEST} 2>/dev/null | sort -n | uniq -c | awk '{{print $2 * 1000, $1}}'; "
        f"echo {HISTOGRAM_END}; rm -f {PER_REQUEST}"
    )


def rank(n: int, p: float) -> int:
    """ab's percentile: the request at index n * p / 100 (0-based) of those sorted by total time."""
    return min(n, int(n * p / 100) + 1)


def failed(text: str) -> int:
    """ab's failed requests, each counted once. With -r (the fault run) ab counts one failure up to
    three times: a refused connection is an Exception (its poll error), then a Receive error (the
    read that finds it refused), then a Length error (the empty response it closes); a reset one is
    Receive and Length. So the requests are Connect + Receive, and what Exceptions and Length have
    beyond Receive (measured: Receive 542, Length 542, Exceptions 538 for 542 requests)."""
    total = number(r"^Failed requests:\s+(\d+)", text, "failed requests", int)
    parts = re.search(r"\(Connect: (\d+), Receive: (\d+), Length: (\d+), Exceptions: (\d+)\)", text)
    if not parts:
        return total
    connect, receive, length, exceptions = (int(v) for v in parts.groups())
    return connect + receive + max(0, exceptions - receive) + max(0, length - receive)


def parse(text: str, load: Load | None = None, document_length: int = 0) -> RunResult:
    """ab's report; it states the concurrency and document length itself."""
    if "Requests per second" not in text:
        tail = text.split(HISTOGRAM_START)[0].strip().splitlines()[-3:]
        raise ParseError("ab did not finish: " + " | ".join(tail))
    non_2xx = re.search(r"^Non-2xx responses:\s+(\d+)", text, re.MULTILINE)
    percentiles = {f"p{m.group(1)}": float(m.group(2)) for m in re.finditer(r"^\s+(\d+)%\s+(\d+)", text, re.MULTILINE)}
    keepalive = re.search(r"^Keep-Alive requests:\s+(\d+)", text, re.MULTILINE)
    return RunResult(
        tool="ab",
        keepalive=load.keepalive if load else keepalive is not None,
        concurrency=number(r"^Concurrency Level:\s+(\d+)", text, "concurrency level", int),
        # ab's "Complete requests" counts the failed ones too (each closes a connection): not completed.
        complete_requests=number(r"^Complete requests:\s+(\d+)", text, "complete requests", int) - failed(text),
        failed_requests=failed(text),
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
        latency_histogram_us=histogram(text),
    )


MAX_CONCURRENCY = 20000  # ab's MAX_CONCURRENCY: its -c

TOOL = LoadTool(
    NAME,
    command,
    parse,
    rank,
    0.0,
    packages={"debian": ("apache2-utils",), "rhel": ("httpd-tools",)},
    rate_per_vcpu=280.0,  # 162 req/s at 58% of one vCPU
    max_connections_per_client=MAX_CONCURRENCY,
)
