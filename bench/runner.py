"""Run the benchmark on a deployed lab, from the host, over SSH; return JSON-able results.

Steps (every VM is ready: the readiness resources waited for each): the VIP answers
and every web server is reached through it; then each load run is measured with the LB's, the
clients' and the webs' interface byte counters and nginx's access logs around it. The bytes prove
the mode: under dsr the LB receives the requests but sends well under 10% of what the clients
receive (the replies bypass it); under proxy it sends about all of it. The bounds are the mode's
(lbmodes/, passed in as `shares`); a run outside them fails, with the likely cause. An
out-of-memory kill on any VM's console during the run fails it, naming the VM (a result from an OOM-killed web is not a result). Cancelling (Ctrl-C in
`pulumi up`) stops the local SSH sessions and the load tools on the clients within seconds. Raw
output is kept under results/<stack>/<time>/; a run that fails leaves a FAILED note there.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bench.matrix import Step, split, steps, summarize
from bench.parse import RunResult, combine, parse_ab, parse_wrk
from bench.ssh import Ssh, SshError
from engine import runtime
from virt.readiness import oom_kills

# The proof of mode uses the share of the response bytes that crossed the LB:
#   (LB bytes sent - client bytes sent) / client bytes received
# The LB forwards everything the clients send in every mode (requests, ACKs); what it sends beyond
# that is responses: about 0% when the webs reply directly, about 100% when the replies pass the LB,
# whatever the file size. (LB sent / client received, also reported, includes the forwarded
# requests: about 9% for 5 KiB.) Each mode gives its bounds (lbmodes/base.py ShareRule).
MIN_REQUEST_SHARE = 0.50  # LB bytes received / client bytes sent, at least, in every mode
CLIENT_CPU_SATURATED = 0.95  # a client this busy measures itself, not the LB


class BenchmarkFailed(runtime.LabFailure):
    pass


@dataclass(frozen=True)
class Node:
    name: str
    role: str
    address: str
    console_log: str = ""


@dataclass(frozen=True)
class BenchParams:
    stack: str
    mode: str
    vip: str
    lb_mac: str
    lb: Node
    clients: list[Node]
    webs: list[Node]
    tool: str
    scheme: str  # http | https
    concurrency: list[int]  # per step, summed over the clients
    requests: list[int]
    repeats: int
    file_size_bytes: int
    # From the mode (lbmodes/): the LB thread count of each matrix row, what the LB was deployed
    # with, how to change it between rows ({threads: Retune.as_dict()}, empty when nothing can
    # change), and the bounds of the response bytes that may cross the LB (ShareRule.as_dict()).
    lb_steps: list[int]
    lb_threads: int
    retunes: dict[str, dict]
    shares: dict
    results_dir: str

    @classmethod
    def from_props(cls, props: dict, results_dir: str) -> BenchParams:
        """From a resource's inputs, where every number arrived as a float (protobuf Struct)."""
        p = dict(props)
        for key in ("repeats", "file_size_bytes", "lb_threads"):
            p[key] = int(p[key])
        for key in ("concurrency", "requests", "lb_steps"):
            p[key] = [int(v) for v in p[key]]
        p["lb"] = Node(**p["lb"])
        p["clients"] = [Node(**n) for n in p["clients"]]
        p["webs"] = [Node(**n) for n in p["webs"]]
        return cls(**{**p, "results_dir": results_dir})


SNAPSHOT = (
    "head -1 /proc/stat; cd /sys/class/net/eth0/statistics && cat rx_bytes tx_bytes rx_dropped tx_dropped; "
    "nstat -asz TcpExtListenDrops TcpExtListenOverflows 2>/dev/null | awk '/^TcpExt/ {print $2}'"
)


def parse_snapshot(text: str) -> dict[str, int]:
    """/proc/stat's cpu line, eth0's byte and drop counters, and TCP listen drops/overflows."""
    lines = text.split("\n")
    cpu = [int(v) for v in lines[0].split()[1:9]]
    values = [int(v) for v in lines[1:] if v.strip()]
    return {
        "cpu_total": sum(cpu),
        "cpu_idle": cpu[3] + cpu[4],
        "rx_bytes": values[0],
        "tx_bytes": values[1],
        "rx_dropped": values[2],
        "tx_dropped": values[3],
        "listen_drops": values[4] if len(values) > 4 else 0,
        "listen_overflows": values[5] if len(values) > 5 else 0,
    }


def snapshot(ssh: Ssh, node: Node) -> dict[str, int]:
    return parse_snapshot(ssh.run(node.address, SNAPSHOT).stdout)


def snapshots(ssh: Ssh, nodes: list[Node]) -> dict[str, dict[str, int]]:
    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(zip([n.name for n in nodes], pool.map(lambda n: snapshot(ssh, n), nodes), strict=True))


def busy(after: dict[str, int], before: dict[str, int]) -> float:
    total = after["cpu_total"] - before["cpu_total"]
    return round(1 - (after["cpu_idle"] - before["cpu_idle"]) / total, 3) if total > 0 else 0.0


def served(ssh: Ssh, web: Node) -> int:
    """Requests for /dummy_file in the web's access log (nginx's `main` format)."""
    return int(
        ssh.run(web.address, "sudo grep -c ' /dummy_file ' /var/log/nginx/access.log || true").stdout.strip() or 0
    )


def url(p: BenchParams) -> str:
    return f"{p.scheme}://{p.vip}/dummy_file"


def check_paths(ssh: Ssh, p: BenchParams) -> None:
    """The VIP answers with the file, the LB owns the VIP's ARP entry, every web serves through it."""
    client = p.clients[0]
    curl = "curl -s -k -o /dev/null --max-time 10"  # -k: the LB's certificate is the seed's self-signed one
    got = ssh.run(client.address, f"{curl} -w '%{{http_code}} %{{size_download}}' {url(p)}", check=False).stdout
    if got.strip() != f"200 {p.file_size_bytes}":
        raise BenchmarkFailed(f"{url(p)} from {client.name}: expected '200 {p.file_size_bytes}', got {got.strip()!r}")
    neigh = ssh.run(client.address, f"ip neigh show {p.vip}").stdout.lower()
    if p.lb_mac.lower() not in neigh:
        raise BenchmarkFailed(
            f"{client.name}'s ARP entry for the VIP is {neigh.strip()!r}, not the LB's MAC {p.lb_mac}: "
            "something other than the LB answers ARP for the VIP (a web without arp_ignore=1/arp_announce=2?)"
        )
    before = {w.name: served(ssh, w) for w in p.webs}
    probes = 4 * len(p.webs)
    ssh.run(
        client.address,
        f"for i in $(seq {probes}); do {curl} {url(p)}; done",
        timeout=60 + 10 * probes,
    )
    missed = [w.name for w in p.webs if served(ssh, w) == before[w.name]]
    if missed:
        raise BenchmarkFailed(
            f"{probes} requests to the VIP never reached {', '.join(missed)}: check the LB's backend list and health checks"
        )


def load_command(tool: str, url: str, concurrency: int, requests: int) -> str:
    if tool == "wrk":
        # wrk runs for a duration: sized to about the requests asked for at a modest rate.
        return f"ulimit -n 1048576; wrk -t1 -c{concurrency} -d{max(5, requests // 200)}s --latency {url} 2>&1"
    return f"ulimit -n 1048576; ab -c {concurrency} -n {requests} {url} 2>&1"  # the seed's command


def parse(tool: str, text: str, concurrency: int, file_size: int) -> RunResult:
    return parse_wrk(text, concurrency, file_size) if tool == "wrk" else parse_ab(text)


def settled_command(vip: str) -> str:
    """Open client connections to the VIP (zero on the LB and webs), then `ss -s`'s TCP line."""
    return f"ss -Htan state established dst {vip}:80 | wc -l; ss -s | sed -n 's/^TCP: *//p'"


def unsettled(out: str) -> int:
    """Client connections to the VIP still open, plus orphaned sockets (`ss -s`), from settled_command."""
    count, _, tcp = out.partition("\n")
    orphaned = re.search(r"orphaned (\d+)", tcp)
    return int(count.strip() or 0) + (int(orphaned.group(1)) if orphaned else 0)


def settle(ssh: Ssh, vip: str, nodes: list[Node], timeout_s: float = 120) -> dict[str, str]:
    """Wait until the previous run's connections are gone (the seed checked `ss -s` by hand).

    What counts: the clients' connections to the VIP and orphaned sockets anywhere. HAProxy's pooled
    keep-alive connections to the webs are its steady state, not leftovers of a run.
    """
    deadline = time.monotonic() + timeout_s
    command = settled_command(vip)
    while True:
        with ThreadPoolExecutor(max_workers=8) as pool:
            outs = dict(
                zip([n.name for n in nodes], pool.map(lambda n: ssh.run(n.address, command).stdout, nodes), strict=True)
            )
        left = {name: unsettled(out) for name, out in outs.items()}
        if not any(left.values()) or time.monotonic() > deadline:
            state = {name: out.partition("\n")[2].strip() for name, out in outs.items()}
            if any(left.values()):
                state["unsettled"] = ", ".join(f"{n} ({c})" for n, c in left.items() if c)
            return state
        runtime.sleep(2, "benchmark: waiting for connections to settle")


def retune(ssh: Ssh, p: BenchParams, threads: int) -> None:
    """Run the LB with `threads` for the next steps: the mode's re-rendered files, applied, then checked."""
    change = p.retunes[str(threads)]
    for f in change["files"]:
        data = base64.b64encode(f["content"].encode()).decode()
        ssh.run(p.lb.address, f"echo {data} | base64 -d | sudo install -m {f['permissions']} /dev/stdin {f['path']}")
    ssh.run(p.lb.address, f"sudo sh -c '{change['apply']}'")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if change["expect"] in ssh.run(p.lb.address, change["check"], check=False).stdout.split():
            return
        runtime.sleep(1, f"benchmark: waiting for the LB to run {threads} thread(s)")
    raise BenchmarkFailed(
        f"{p.lb.name}: the LB did not come back with {threads} thread(s) within 60 s "
        f"(`{change['check']}` never listed {change['expect']})"
    )


def mode_problem(mode: str, shares: dict, lb: dict[str, int], clients: dict[str, int]) -> str | None:
    """Does the traffic match the mode? Deltas of eth0 byte counters over the run, against the mode's bounds."""
    sent_share = response_share(lb, clients)
    request_share = lb["rx_bytes"] / max(1, clients["tx_bytes"])
    if request_share < MIN_REQUEST_SHARE:
        return (
            f"the LB received only {request_share:.0%} of the bytes the clients sent: requests are not going "
            "through it (a web answering ARP for the VIP?)"
        )
    if not shares["low"] <= sent_share <= shares["high"]:
        return (
            f"mode {mode}, but {sent_share:.0%} of the response bytes crossed the LB (expected "
            f"{shares['expected']}): {shares['otherwise']}"
        )
    return None


def response_share(lb: dict[str, int], clients: dict[str, int]) -> float:
    return (lb["tx_bytes"] - clients["tx_bytes"]) / max(1, clients["rx_bytes"])


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in after}


def _sum(items: list[dict[str, int]]) -> dict[str, int]:
    return {k: sum(i[k] for i in items) for k in ("rx_bytes", "tx_bytes")}


def flags_of(deltas: dict[str, dict[str, int]], cpu: dict[str, float], clients: list[Node]) -> list[str]:
    """What distorts a result: a saturated client measures the client, drops lose requests."""
    flags = [
        f"client CPU saturated: {c.name} {cpu[c.name]:.0%}" for c in clients if cpu[c.name] >= CLIENT_CPU_SATURATED
    ]
    for name, d in deltas.items():
        lost = {k: d[k] for k in ("listen_drops", "listen_overflows", "rx_dropped", "tx_dropped") if d[k] > 0}
        if lost:
            flags.append(f"drops on {name}: " + ", ".join(f"{k} {v}" for k, v in lost.items()))
    return flags


def run_step(ssh: Ssh, p: BenchParams, step: Step, out: Path) -> dict:
    target = url(p)
    nodes = [*p.clients, p.lb, *p.webs]
    conc, reqs = split(step.concurrency, len(p.clients)), split(step.requests, len(p.clients))
    settled = settle(ssh, p.vip, nodes)
    with ThreadPoolExecutor(max_workers=len(p.clients)) as pool:  # warm-up: caches, ARP, TCP state
        list(
            pool.map(
                lambda i: ssh.run(
                    p.clients[i].address,
                    load_command("ab", target, min(conc[i], 10), max(min(reqs[i], 200), min(conc[i], 10)))
                    + " >/dev/null",
                    timeout=600,
                    check=False,
                ),
                range(len(p.clients)),
            )
        )
    before = snapshots(ssh, nodes)
    served0 = {w.name: served(ssh, w) for w in p.webs}
    with ThreadPoolExecutor(max_workers=len(p.clients)) as pool:
        texts = list(
            pool.map(
                lambda i: (
                    ssh.run(
                        p.clients[i].address, load_command(p.tool, target, conc[i], reqs[i]), timeout=3600, check=False
                    ).stdout
                ),
                range(len(p.clients)),
            )
        )
    after = snapshots(ssh, nodes)
    per_web = {w.name: served(ssh, w) - served0[w.name] for w in p.webs}
    tag = f"t{step.threads}-c{step.concurrency}-n{step.requests}-r{step.repeat}"
    for client, text in zip(p.clients, texts, strict=True):
        (out / f"{tag}.{client.name}.{p.tool}.txt").write_text(text)

    deltas = {name: _delta(after[name], before[name]) for name in after}
    cpu = {name: busy(after[name], before[name]) for name in after}
    lb_bytes = {k: deltas[p.lb.name][k] for k in ("rx_bytes", "tx_bytes")}
    client_bytes = _sum([deltas[c.name] for c in p.clients])
    runs = [parse(p.tool, t, c, p.file_size_bytes) for t, c in zip(texts, conc, strict=True)]
    combined = combine(runs)
    record = {
        "mode": p.mode,
        "tool": p.tool,
        "scheme": p.scheme,
        "lb_threads": step.threads,
        "repeat": step.repeat,
        "total_requests_asked": step.requests,
        "file_size_bytes": p.file_size_bytes,
        **combined,
        "per_client": [r.as_dict() for r in runs],
        "requests_per_web": per_web,
        "lb_bytes": lb_bytes,
        "client_bytes": client_bytes,
        "lb_sent_share": round(lb_bytes["tx_bytes"] / max(1, client_bytes["rx_bytes"]), 4),
        "lb_response_share": round(response_share(lb_bytes, client_bytes), 4),
        "lb_bytes_per_request": round(
            (lb_bytes["rx_bytes"] + lb_bytes["tx_bytes"]) / max(1, combined["total_requests"]), 1
        ),
        "cpu_busy": cpu,
        "counters": deltas,
        "before_run": settled,
        "flags": flags_of(deltas, cpu, p.clients)
        + ([f"connections still open: {settled['unsettled']}"] if "unsettled" in settled else []),
    }
    (out / f"{tag}.json").write_text(json.dumps(record, indent=1))
    problem = mode_problem(p.mode, p.shares, lb_bytes, client_bytes)
    if problem:
        raise BenchmarkFailed(f"{tag}: {problem} (raw output and counters in {out})")
    return record


class OomWatch:
    """Out-of-memory kills (and panics) on the VMs' consoles since the watch began."""

    def __init__(self, nodes: list[Node]):
        self.nodes = [n for n in nodes if n.console_log]
        self.offsets = {n.name: oom_kills(n.console_log, 0)[1] for n in self.nodes}

    def check(self, when: str) -> None:
        for n in self.nodes:
            found, _ = oom_kills(n.console_log, self.offsets[n.name])
            if found:
                raise BenchmarkFailed(
                    f"{n.name}: {found} {when}; its results are not results. Give the role more memory "
                    f"(see the memory estimate in the README) or lower the load (console: {n.console_log})"
                )


def stop_load_tools(ssh: Ssh, clients: list[Node]) -> None:
    """Best effort, after a cancel or a failure: no ab or wrk left running on a client."""
    for c in clients:
        with contextlib.suppress(SshError):
            ssh.run(c.address, "sudo pkill -x ab; sudo pkill -x wrk; true", timeout=20, check=False, cancellable=False)


def run(p: BenchParams, ssh: Ssh) -> dict:
    out = Path(p.results_dir) / p.stack / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _run(p, ssh, out)
    except BaseException as e:
        (out / "FAILED").write_text(f"{type(e).__name__}: {e}\n")
        if isinstance(e, (runtime.Cancelled, SshError, BenchmarkFailed)):
            stop_load_tools(ssh, p.clients)
        raise


def _run(p: BenchParams, ssh: Ssh, out: Path) -> dict:
    nodes = [*p.clients, p.lb, *p.webs]
    oom = OomWatch(nodes)
    check_paths(ssh, p)
    plan = steps(tuple(p.lb_steps), tuple(p.concurrency), tuple(p.requests), p.repeats)
    runs, current = [], p.lb_threads
    try:
        for i, step in enumerate(plan, 1):
            runtime.check_cancelled("benchmark")
            if step.threads != current:
                retune(ssh, p, step.threads)
                current = step.threads
            runs.append(run_step(ssh, p, step, out))
            oom.check(f"during run {i} of {len(plan)}")
            r = runs[-1]
            # Each step stays in `pulumi up`'s output as it completes (not only in the status column).
            threads = f"{step.threads} thread(s), " if p.retunes else ""
            runtime.log(
                f"{p.mode} run {i}/{len(plan)}: {threads}concurrency {step.concurrency}, repeat {step.repeat}: "
                f"{r['requests_per_second']:.1f} req/s, {r['latency_ms']:.2f} ms, "
                f"{r['lb_response_share']:.0%} of the responses through the LB"
            )
    finally:
        if current != p.lb_threads and not runtime.cancelled.is_set():
            retune(ssh, p, p.lb_threads)  # the LB goes back to what it was deployed with
    summary = summarize(runs)
    per_web: dict[str, int] = {}
    for r in runs:
        for name, count in r["requests_per_web"].items():
            per_web[name] = per_web.get(name, 0) + count
    result = {
        "mode": p.mode,
        "tool": p.tool,
        "scheme": p.scheme,
        "runs": runs,
        "summary": summary,
        "requests_per_web": per_web,
        "raw_dir": str(out),
    }
    (out / "result.json").write_text(json.dumps(result, indent=1))
    return result
