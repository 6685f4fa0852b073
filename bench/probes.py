"""What the benchmark checks on the running lab before and between its runs, over SSH: the paths
through the VIP, that the previous run's connections are gone, and no OOM kill on any console."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor

import runtime
from bench.counters import served
from runtime.console import oom_kills
from runtime.ssh import Ssh
from runtime.vm import VmRef


class BenchmarkFailed(runtime.LabFailure):
    pass


def check_paths(ssh: Ssh, url: str, vip: str, lb_mac: str, file_size: int, client: VmRef, webs: list[VmRef]) -> None:
    """The LB owns the VIP's ARP entry, every web serves through the VIP (a failure names the webs
    never reached), and the VIP answers with the file."""
    curl = "curl -s -k -o /dev/null"  # -k: the LB's certificate is the seed's self-signed one
    neigh = ssh.run(client.address, f"{curl} --max-time 10 {url}; ip neigh show {vip}", check=False).stdout.lower()
    if lb_mac.lower() not in neigh:
        raise BenchmarkFailed(
            f"{client.name}'s ARP entry for the VIP is {neigh.strip()!r}, not the LB's MAC {lb_mac}: "
            "something other than the LB answers ARP for the VIP (a web without arp_ignore=1/arp_announce=2?)"
        )
    before = {w.name: served(ssh, w) for w in webs}
    probes = 4 * len(webs)
    # Every failed request says why (curl -S), so a web that lost the VIP or its route is named below.
    said = ssh.run(
        client.address,
        f"for i in $(seq {probes}); do {curl} -S --max-time 5 {url} 2>&1 || true; done",
        timeout=60 + 6 * probes,
    ).stdout
    missed = [w.name for w in webs if served(ssh, w) == before[w.name]]
    errors = [line for line in said.splitlines() if line.startswith("curl:")]
    if missed or errors:
        raise BenchmarkFailed(
            f"{probes} requests to {url} from {client.name}: expected every one answered and every web reached; "
            f"{len(errors)} failed"
            + (f" ({errors[-1]})" if errors else "")
            + (f", and none reached {', '.join(missed)}" if missed else "")
            + ": check that web's nginx, its VIP and its route (the mode's web set-up), and the LB's backend list"
        )
    got = ssh.run(
        client.address, f"{curl} --max-time 10 -w '%{{http_code}} %{{size_download}}' {url}", check=False
    ).stdout
    if got.strip() != f"200 {file_size}":
        raise BenchmarkFailed(f"{url} from {client.name}: expected '200 {file_size}', got {got.strip()!r}")


def settled_command(vip: str, port: int) -> str:
    """Open client connections to the VIP (zero on the LB and webs), then `ss -s`'s TCP line."""
    return f"ss -Htan state established dst {vip}:{port} | wc -l; ss -s | sed -n 's/^TCP: *//p'"


def unsettled(out: str) -> int:
    """Client connections to the VIP still open, plus orphaned sockets (`ss -s`), from settled_command."""
    count, _, tcp = out.partition("\n")
    orphaned = re.search(r"orphaned (\d+)", tcp)
    return int(count.strip() or 0) + (int(orphaned.group(1)) if orphaned else 0)


def settle(ssh: Ssh, vip: str, port: int, vms: list[VmRef], timeout_s: float = 120) -> dict[str, str]:
    """Wait until the previous run's connections are gone (the seed checked `ss -s` by hand).

    What counts: the clients' connections to the VIP and orphaned sockets anywhere. HAProxy's pooled
    keep-alive connections to the webs are its steady state, not leftovers of a run.
    """
    deadline = time.monotonic() + timeout_s
    command = settled_command(vip, port)
    while True:
        with ThreadPoolExecutor(max_workers=8) as pool:
            outs = dict(
                zip([v.name for v in vms], pool.map(lambda v: ssh.run(v.address, command).stdout, vms), strict=True)
            )
        left = {name: unsettled(out) for name, out in outs.items()}
        if not any(left.values()) or time.monotonic() > deadline:
            state = {name: out.partition("\n")[2].strip() for name, out in outs.items()}
            if any(left.values()):
                state["unsettled"] = ", ".join(f"{n} ({c})" for n, c in left.items() if c)
            return state
        runtime.sleep(2, "benchmark: waiting for connections to settle")


class OomWatch:
    """Out-of-memory kills (and panics) on the VMs' consoles since the watch began."""

    def __init__(self, vms: list[VmRef]):
        self.vms = [v for v in vms if v.console_log]
        self.offsets = {v.name: oom_kills(v.console_log, 0, v.host)[1] for v in self.vms}

    def check(self, when: str) -> None:
        for v in self.vms:
            found, _ = oom_kills(v.console_log, self.offsets[v.name], v.host)
            if found:
                raise BenchmarkFailed(
                    f"{v.name}: {found} {when}; its results are not results. Give the role more memory "
                    f"(see the memory estimate in the README) or lower the load (console: {v.console_log})"
                )
