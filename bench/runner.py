"""Run the benchmark on a deployed lab, from the host, over SSH; return JSON-able results.

Steps: every VM has finished cloud-init (bounded, naming the VM that is late); the VIP answers
and every web server is reached through it; then each load run is measured with the LB's, the
clients' and the webs' interface byte counters and nginx's access logs around it. The bytes prove
the mode: under dsr the LB receives the requests but sends well under 10% of what the clients
receive (the replies bypass it); under proxy it sends about all of it. A run that contradicts its
mode fails, with the likely cause. Raw output is kept under results/<stack>/<time>/.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bench.parse import RunResult, combine, parse_ab, parse_wrk
from bench.ssh import Ssh, SshError

# The proof of mode uses the share of the response bytes that crossed the LB:
#   (LB bytes sent - client bytes sent) / client bytes received
# The LB forwards everything the clients send in both modes (requests, ACKs); what it sends beyond
# that is responses. Under dsr that is about 0%, under proxy about 100%, whatever the file size.
# (LB sent / client received, also reported, includes the forwarded requests: about 9% for 5 KiB.)
DSR_MAX_RESPONSE_SHARE = 0.10
PROXY_MIN_RESPONSE_SHARE = 0.80
MIN_REQUEST_SHARE = 0.50  # LB bytes received / client bytes sent, at least, in both modes


class BenchmarkFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class Node:
    name: str
    role: str
    address: str


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
    concurrency: int
    requests: int
    file_size_bytes: int
    lb_threads: int
    ready_timeout_s: float
    results_dir: str

    @classmethod
    def from_props(cls, props: dict, results_dir: str) -> BenchParams:
        """From a resource's inputs, where every number arrived as a float (protobuf Struct)."""
        p = dict(props)
        for key in ("concurrency", "requests", "file_size_bytes", "lb_threads"):
            p[key] = int(p[key])
        p["lb"] = Node(**p["lb"])
        p["clients"] = [Node(**n) for n in p["clients"]]
        p["webs"] = [Node(**n) for n in p["webs"]]
        return cls(**{**p, "results_dir": results_dir})


def counters(ssh: Ssh, node: Node) -> dict[str, int]:
    out = ssh.run(
        node.address, "cat /sys/class/net/eth0/statistics/rx_bytes /sys/class/net/eth0/statistics/tx_bytes"
    ).stdout.split()
    return {"rx_bytes": int(out[0]), "tx_bytes": int(out[1])}


def served(ssh: Ssh, web: Node) -> int:
    """Requests for /dummy_file in the web's access log (nginx's `main` format)."""
    return int(
        ssh.run(web.address, "sudo grep -c ' /dummy_file ' /var/log/nginx/access.log || true").stdout.strip() or 0
    )


def wait_ready(ssh: Ssh, nodes: list[Node], timeout_s: float) -> dict[str, float]:
    """Every VM reachable and cloud-init done; returns seconds waited per VM."""
    deadline = time.monotonic() + timeout_s
    start = time.monotonic()

    def one(node: Node) -> float:
        try:
            ssh.wait_reachable(node.address, deadline)
            left = max(5.0, deadline - time.monotonic())
            done = ssh.run(
                node.address, f"timeout {int(left)} cloud-init status --wait --long", timeout=left + 10, check=False
            )
        except SshError as e:
            raise BenchmarkFailed(f"{node.name} ({node.address}) was not ready within {timeout_s:.0f} s: {e}") from e
        if "status: done" not in done.stdout:
            raise BenchmarkFailed(
                f"{node.name} ({node.address}): cloud-init did not finish cleanly within {timeout_s:.0f} s:\n{done.stdout.strip()}"
            )
        return round(time.monotonic() - start, 1)

    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(zip([n.name for n in nodes], pool.map(one, nodes), strict=True))


def check_paths(ssh: Ssh, p: BenchParams) -> None:
    """The VIP answers with the file, the LB owns the VIP's ARP entry, every web serves through it."""
    client = p.clients[0]
    got = ssh.run(
        client.address,
        f"curl -s -o /dev/null -w '%{{http_code}} %{{size_download}}' --max-time 10 http://{p.vip}/dummy_file",
        check=False,
    ).stdout
    if got.strip() != f"200 {p.file_size_bytes}":
        raise BenchmarkFailed(
            f"http://{p.vip}/dummy_file from {client.name}: expected '200 {p.file_size_bytes}', got {got.strip()!r}"
        )
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
        f"for i in $(seq {probes}); do curl -s -o /dev/null --max-time 10 http://{p.vip}/dummy_file; done",
        timeout=60 + 10 * probes,
    )
    missed = [w.name for w in p.webs if served(ssh, w) == before[w.name]]
    if missed:
        raise BenchmarkFailed(
            f"{probes} requests to the VIP never reached {', '.join(missed)}: check the LB's backend list and health checks"
        )


def load_command(p: BenchParams) -> str:
    url = f"http://{p.vip}/dummy_file"
    if p.tool == "wrk":
        # wrk runs for a duration: sized to about the requests asked for at a modest rate.
        return f"ulimit -n 1048576; wrk -t1 -c{p.concurrency} -d{max(5, p.requests // 200)}s --latency {url} 2>&1"
    return f"ulimit -n 1048576; ab -r -c {p.concurrency} -n {p.requests} {url} 2>&1"


def parse(p: BenchParams, text: str) -> RunResult:
    return parse_wrk(text, p.concurrency, p.file_size_bytes) if p.tool == "wrk" else parse_ab(text)


def mode_problem(mode: str, lb: dict[str, int], clients: dict[str, int]) -> str | None:
    """Does the traffic match the mode? Deltas of eth0 byte counters over the run."""
    sent_share = response_share(lb, clients)
    request_share = lb["rx_bytes"] / max(1, clients["tx_bytes"])
    if request_share < MIN_REQUEST_SHARE:
        return (
            f"the LB received only {request_share:.0%} of the bytes the clients sent: requests are not going "
            "through it (a web answering ARP for the VIP?)"
        )
    if mode == "dsr" and sent_share > DSR_MAX_RESPONSE_SHARE:
        return (
            f"mode dsr, but {sent_share:.0%} of the response bytes crossed the LB (expected under "
            f"{DSR_MAX_RESPONSE_SHARE:.0%}): responses are not bypassing it, so this is not direct server return"
        )
    if mode == "proxy" and sent_share < PROXY_MIN_RESPONSE_SHARE:
        return (
            f"mode proxy, but only {sent_share:.0%} of the response bytes crossed the LB (expected about "
            "100%): responses are bypassing the proxy"
        )
    return None


def response_share(lb: dict[str, int], clients: dict[str, int]) -> float:
    return (lb["tx_bytes"] - clients["tx_bytes"]) / max(1, clients["rx_bytes"])


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in after}


def _sum(items: list[dict[str, int]]) -> dict[str, int]:
    return {k: sum(i[k] for i in items) for k in ("rx_bytes", "tx_bytes")}


def run(p: BenchParams, ssh: Ssh) -> dict:
    out = Path(p.results_dir) / p.stack / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out.mkdir(parents=True, exist_ok=True)
    ready = wait_ready(ssh, [*p.clients, p.lb, *p.webs], p.ready_timeout_s)
    check_paths(ssh, p)

    lb0 = counters(ssh, p.lb)
    clients0 = [counters(ssh, c) for c in p.clients]
    served0 = {w.name: served(ssh, w) for w in p.webs}
    with ThreadPoolExecutor(max_workers=len(p.clients)) as pool:
        texts = list(
            pool.map(lambda c: ssh.run(c.address, load_command(p), timeout=3600, check=False).stdout, p.clients)
        )
    for client, text in zip(p.clients, texts, strict=True):
        (out / f"{client.name}.{p.tool}.txt").write_text(text)
    lb_bytes = _delta(counters(ssh, p.lb), lb0)
    client_bytes = _sum([_delta(counters(ssh, c), b) for c, b in zip(p.clients, clients0, strict=True)])
    per_web = {w.name: served(ssh, w) - served0[w.name] for w in p.webs}

    runs = [parse(p, t) for t in texts]
    combined = combine(runs)
    result = {
        "mode": p.mode,
        "tool": p.tool,
        "lb_threads": p.lb_threads if p.mode == "proxy" else 1,
        "file_size_bytes": p.file_size_bytes,
        **combined,
        "per_client": [r.as_dict() for r in runs],
        "requests_per_web": per_web,
        "lb_bytes": lb_bytes,
        "client_bytes": client_bytes,
        "lb_sent_share": round(lb_bytes["tx_bytes"] / max(1, client_bytes["rx_bytes"]), 4),
        "lb_response_share": round(response_share(lb_bytes, client_bytes), 4),
        "ready_seconds": ready,
        "raw_dir": str(out),
    }
    (out / "result.json").write_text(json.dumps(result, indent=1))
    problem = mode_problem(p.mode, lb_bytes, client_bytes)
    if problem:
        raise BenchmarkFailed(f"{problem} (raw output and counters in {out})")
    if combined["failed_requests"] or combined["non_2xx_responses"]:
        result["warning"] = (
            f"{combined['failed_requests']} failed and {combined['non_2xx_responses']} non-2xx responses"
        )
    return result
