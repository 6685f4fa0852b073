"""vegeta: open-loop load. Each client sends at the constant rate it is given, whatever the LB does
(vegeta's constant pacer starts a worker for a request that is due when none is free), for a
duration, with keep-alive or a connection per request (`-keepalive=false`: RFC 9411's connections
per second; kept alive: its transactions per second).

What it times, and why it is free of coordinated omission: vegeta records each request's actual send
time, its sequence number and its latency (send to last byte). The schedule says when request `seq`
was due: the first request's send time plus `seq` periods. Each request's latency here counts from
that due time, so a request sent late because the client (or the LB holding its connections) fell
behind carries the wait in its latency, as wrk2 does. The histogram is per request (exact, in
microseconds), merged across clients as ab's is. Beside it the client prints, per second of its run,
the requests it completed with a 2xx and those that failed (the achieved rate beside the offered), and
how far it fell behind its own schedule at worst: a client more than `BEHIND_MS` behind could not
drive the rate, which invalidates the trial (the LB is not what limited it).

Built on the host from its Go module (runtime/builtin-image.yaml, `go_tools`) into the builtin image:
no distribution packages it, so cloud images cannot run it.
"""

from __future__ import annotations

import base64
import math
import re

from loadtools.base import HISTOGRAM_END, HISTOGRAM_START, Load, LoadTool, ParseError, RunResult, histogram

NAME = "vegeta"
RESULTS, SCRIPT = "/tmp/l2dsr-vegeta.bin", "/tmp/l2dsr-vegeta.awk"
PER_SECOND_START, PER_SECOND_END, SUMMARY = "l2dsr-per-second", "l2dsr-per-second-end", "l2dsr-vegeta"
BEHIND_MS = 100.0  # a client this far behind its schedule could not drive the rate
TIMEOUT_S = 10  # a request unanswered this long is failed (its latency counted as this)

# One pass over vegeta's CSV (timestamp ns, code, latency ns, bytes out, bytes in, error, body, attack,
# seq, method, url, headers; the error may hold commas, so seq is counted from the end; times taken
# from the first request's, as doubles hold them): the latency
# histogram from each request's due time, the per-second counts by completion, and the summary.
AWK = r"""
NR == 1 { t0 = $1 }
{
  since = $1 - t0; lag = since - $(NF - 3) * period; if (lag < 0) lag = 0
  if (lag > behind) behind = lag
  end = since + $3; if (end > last) last = end
  sec = int(end / 1e9)
  if ($2 >= 200 && $2 < 300) { ok++; hist[int((lag + $3) / 1000 + 0.5)]++; okps[sec]++ }
  else { bad++; badps[sec]++ }
  if (sec > maxsec) maxsec = sec
}
END {
  print "l2dsr-latency-us"; for (us in hist) print us, hist[us]; print "l2dsr-latency-end"
  print "l2dsr-per-second"; for (s = 0; s <= maxsec; s++) print s, okps[s] + 0, badps[s] + 0; print "l2dsr-per-second-end"
  printf "l2dsr-vegeta sent %d ok %d failed %d behind_ms %.3f first_ns %.0f last_ns %.0f\n", NR, ok, bad, behind / 1e6, t0, t0 + last
}
"""


def per_1000s(rate: float) -> int:
    """vegeta's rate is a whole number of requests per unit of time: the rate per 1,000 s keeps a
    fractional rate per second (62.5/s is 62500/1000s)."""
    return round(rate * 1000)


def command(load: Load) -> str:
    if load.rate <= 0 or load.seconds <= 0:
        raise ValueError("vegeta runs open-loop: a rate and a duration, not a number of requests")
    period_ns = 1e12 / per_1000s(load.rate)  # the schedule vegeta keeps
    script = base64.b64encode(AWK.encode()).decode()
    return (
        f"echo {script} | base64 -d > {SCRIPT}; ulimit -n 1048576 2>/dev/null || ulimit -n $(ulimit -Hn); "
        f"rm -f {RESULTS}; "  # a failed attack must not report the last one's results
        f"echo 'GET {load.url}' | vegeta attack -name=l2dsr -rate={per_1000s(load.rate)}/1000s -duration={load.seconds}s "
        f"-keepalive={'true' if load.keepalive else 'false'} -max-body=0 -timeout={TIMEOUT_S}s "
        f"-workers={min(load.concurrency, 10)} -max-workers={load.concurrency} -output={RESULTS} 2>&1; "
        f"vegeta report {RESULTS} 2>&1; "
        f"vegeta encode --to csv {RESULTS} | awk -F, -v period={period_ns:.1f} -v behind=0 -f {SCRIPT}"
    )


def rank(total: int, p: float) -> int:
    """The nearest rank (vegeta's own percentiles are estimates; the histogram here is exact)."""
    return max(1, min(total, math.ceil(total * p / 100 - 1e-9)))


def per_second(text: str) -> list[tuple[int, int]]:
    """(completed with a 2xx, failed) in each second of the client's run, by when each request ended."""
    _, found, rest = text.partition(PER_SECOND_START + "\n")
    if not found:
        raise ParseError("no per-second counts in vegeta's output")
    body, _, _ = rest.partition(PER_SECOND_END)
    return [(int(ok), int(bad)) for _, ok, bad in (line.split() for line in body.splitlines() if line.strip())]


def summary(text: str) -> dict[str, float]:
    m = re.search(rf"^{SUMMARY} (.*)$", text, re.MULTILINE)
    if not m:
        raise ParseError(f"no `{SUMMARY}` summary: vegeta's results were not read (did the attack run?)")
    words = m.group(1).split()
    return {k: float(v) for k, v in zip(words[::2], words[1::2], strict=True)}


def parse(text: str, load: Load, document_length: int) -> RunResult:
    s = summary(text)
    if not s["sent"]:
        raise ParseError("vegeta sent no request")
    duration = (s["last_ns"] - s["first_ns"]) / 1e9
    ok, failed = int(s["ok"]), int(s["failed"])
    hist = histogram(text)
    codes = re.search(r"^Status Codes\s+\[code:count\]\s+(.*)$", text, re.MULTILINE)
    non_2xx = 0
    if codes:  # `0` is vegeta's code for a request that got no response (an error, not a status)
        for code, count in re.findall(r"(\d+):(\d+)", codes.group(1)):
            non_2xx += int(count) if not (200 <= int(code) < 300 or code == "0") else 0
    return RunResult(
        tool=NAME,
        keepalive=load.keepalive,
        concurrency=load.concurrency,
        complete_requests=ok,
        failed_requests=failed - non_2xx,
        non_2xx_responses=non_2xx,
        requests_per_second=ok / duration if duration > 0 else 0.0,
        time_per_request_ms=1000.0 * sum(us * n for us, n in hist.items()) / 1000 / max(ok, 1),
        time_per_request_all_ms=1000.0 * duration / max(ok, 1),
        # the payload (`-max-body=0` keeps vegeta from holding bodies, so it counts none)
        transfer_rate_kbps=ok * document_length / 1024 / duration if duration > 0 else 0.0,
        document_length=document_length,
        duration_s=duration,
        latency_percentiles_ms={},
        latency_histogram_us=hist,
    )


TOOL = LoadTool(
    name=NAME,
    command=command,
    parse=parse,
    rank=rank,
    grid_pct=0.0,
    packages={},  # none: only the builtin image has it, built on the host from its Go module
    go_module="github.com/tsenart/vegeta/v12@v12.13.0",
    # a 1-vCPU client under emulation saturated at about 100 requests/s with a connection per request
    rate_per_vcpu=100.0,
    memory_base_mib=24,
    memory_bytes_per_connection=32768,
    open_loop=True,
)

__all__ = ["BEHIND_MS", "HISTOGRAM_END", "HISTOGRAM_START", "TOOL", "per_second", "summary"]
