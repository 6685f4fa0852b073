"""What the benchmark checks on the running lab before and between its runs, over SSH: the paths
through the VIP, that the previous run's connections are gone, and no OOM kill on any console."""

from __future__ import annotations

import re
import time

import runtime
from bench.counters import Readers, Reading, served
from runtime.console import oom_kills
from runtime.ssh import Ssh, SshError
from runtime.vm import VmRef


class BenchmarkFailed(runtime.LabFailure):
    pass


def served_by(ssh: Ssh, webs: list[VmRef]) -> dict[str, int]:
    return dict(zip([w.name for w in webs], runtime.at_once(lambda w: served(ssh, w), webs), strict=True))


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
    before = served_by(ssh, webs)
    probes = 4 * len(webs)
    # Every failed request says why (curl -S), so a web that lost the VIP or its route is named below.
    said = ssh.run(
        client.address,
        f"for i in $(seq {probes}); do {curl} -S --max-time 5 {url} 2>&1 || true; done",
        timeout=60 + 6 * probes,
    ).stdout
    after = served_by(ssh, webs)
    missed = [w.name for w in webs if after[w.name] == before[w.name]]
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


def unsettled(lines: dict[str, list[str]]) -> int:
    """A client's connections to the VIP still open, plus orphaned sockets (bench/reader.sh's
    `open` and `tcp` lines: /proc/net/tcp and /proc/net/sockstat)."""
    orphaned = re.search(r"orphan(?:ed)? (\d+)", " ".join(lines.get("tcp", [])))
    return int((lines.get("open") or ["0"])[0]) + (int(orphaned.group(1)) if orphaned else 0)


def settle(readers: Readers, timeout_s: float = 120) -> tuple[dict[str, str], dict[str, Reading]]:
    """Wait until the previous run's connections are gone (the seed checked `ss -s` by hand), and
    return with every VM's counters as they were then: the run's start.

    What counts: the clients' connections to the VIP and orphaned sockets anywhere. HAProxy's pooled
    keep-alive connections to the webs are its steady state, not leftovers of a run. The VMs are
    asked again every half second until it holds: the wait ends on the condition.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        readings = readers.read_all()
        left = {name: unsettled(r.lines) for name, r in readings.items()}
        if not any(left.values()) or time.monotonic() > deadline:
            state = {name: " ".join(r.lines.get("tcp", [])) for name, r in readings.items()}
            if any(left.values()):
                state["unsettled"] = ", ".join(f"{n} ({c})" for n, c in left.items() if c)
            return state, readings
        runtime.sleep(0.5, "benchmark: waiting for connections to settle")


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
                    f"(see the memory estimate in docs/memory.md) or lower the load (console: {v.console_log})"
                )


def readable(e: SshError, vms: tuple[VmRef, ...] | list[VmRef], doing: str) -> BenchmarkFailed:
    """A command that failed on a VM, as one message: the VM, the step, what was run and expected,
    and the last lines it printed."""
    names = {vm.address: vm.name for vm in vms}
    vm = names.get(e.address, e.address)
    lines = "\n".join(f"    {line}" for line in e.last_lines()) or "    (nothing)"
    return BenchmarkFailed(
        f"benchmark, {doing}: on {vm} ({e.address}), `{e.command[:200]}` was expected to succeed; "
        f"{e.outcome or e}. Its last lines:\n{lines}"
    )
