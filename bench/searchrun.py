"""The capacity search on the lab (`l2dsr:benchSearch`): for each point (test x response size x LB
threads) the search of bench/capacity.py, each of its trials one measured load (bench/measure.py) of
open-loop load from every client at once, then one trial at half the rate found for its latency.

A trial's numbers, from raw data: sent, completed and failed are every client's own counts summed;
the percentiles are of the clients' merged per-request histograms, each request timed from when it
was due; each VM's CPU is its guest's busy share over the load (what bounds it) beside its
hypervisor's CPU seconds, and each host's share of its CPUs the lab's VMs used (under emulation on
a small host that share, not any guest, is what saturates first); the LB's bytes per completed
request say what crossed it. A client whose
CPU was saturated invalidates the trial: it could not offer the rate, so the LB's limit is not known
above it. A client behind its schedule with CPU to spare was held back by its requests in flight
(answers slow to come): recorded, and carried by each late request's latency.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import runtime
from bench import counters
from bench.capacity import Criteria, Search, Trial, bound_of, hosts_busy, judge, search
from bench.measure import measure
from bench.parse import merge, percentile_us
from bench.probes import BenchmarkFailed
from bench.spec import BenchSpec
from guest.render import NGINX_ROOT
from lab.search import search_file
from lab.spec import SEARCH_TESTS
from loadtools import OPEN_LOOP, Load, url, vegeta
from runtime.ssh import Ssh
from runtime.vm import VmRef
from virt.virsh import Virsh

TOOL = OPEN_LOOP["vegeta"]
CLIENT_BUSY = 0.9  # a client this busy could not be trusted to keep its schedule
IN_FLIGHT_S = 2.0
LOCAL = "http://127.0.0.1"  # a web asks its own nginx


def loads(bench: BenchSpec, rate: float, seconds: float, keepalive: bool, kib: int) -> list[Load]:
    per_client = rate / len(bench.clients)
    in_flight = max(10, int(per_client * IN_FLIGHT_S))
    target = url(bench.scheme, bench.vip, f"/{search_file(kib)}")
    return [Load(target, in_flight, 0, keepalive, seconds=round(seconds), rate=per_client) for _ in bench.clients]


def host_cpus(vms: list[VmRef]) -> dict[str, int]:
    """Each libvirt host's CPU count (virsh nodeinfo), once per search; one that does not say is left out."""
    found = {}
    for vm in vms:
        if vm.host.name not in found:
            found[vm.host.name] = (Virsh(vm.uri).nodeinfo() or (0, 0))[0]
    return {host: cpus for host, cpus in found.items() if cpus}


def trial_of(
    bench: BenchSpec, rate: float, seconds: float, texts: list[str], measured, cpus: dict[str, int] | None = None
) -> tuple[Trial, dict]:
    """A trial's numbers from what every client printed and what was read around the load (`cpus`:
    each host's CPU count, for its share busy)."""
    sums = [vegeta.summary(text) for text in texts]
    runs = [p.run for p in measured.placed]
    hist = merge([r.latency_histogram_us for r in runs])

    def pct(p: float) -> float:
        return round(percentile_us(hist, p, TOOL.rank) / 1000, 3) if hist else 0.0

    sent = sum(int(s["sent"]) for s in sums)
    completed = sum(r.complete_requests for r in runs)
    # A client whose CPU was saturated could not generate the rate: the trial says nothing of the LB. One
    # that fell behind with CPU to spare was held back by its requests in flight (the LB or the webs slow
    # to answer): that is the system's answer, and each late request's wait is in its latency.
    invalid = [
        f"{c.name}'s CPU {measured.cpu[c.name]:.0%} busy"
        for c in bench.clients
        if measured.cpu.get(c.name, 0.0) >= CLIENT_BUSY
    ]
    cpu_s = {name: ns / 1e9 for name, ns in measured.cpu_ns.items()}
    window = measured.timing_s.get("load") or 0.0
    busy_hosts = hosts_busy(cpu_s, window, {vm.name: vm.host.name for vm in bench.vms}, cpus or {})
    trial = Trial(
        offered_rps=rate,
        seconds=seconds,
        sent=sent,
        completed=completed,
        failed=sent - completed,
        p50_ms=pct(50),
        p99_ms=pct(99),
        p999_ms=pct(99.9),
        cpu=dict(measured.cpu),
        roles={vm.name: vm.role for vm in bench.vms},
        hosts_busy=busy_hosts,
        invalid=tuple(invalid),
    )
    seconds_each = [vegeta.per_second(text) for text in texts]
    per_second = [
        [sum(s[i][k] for s in seconds_each if i < len(s)) for k in (0, 1)] for i in range(max(map(len, seconds_each)))
    ]
    lb = counters.bytes_of([measured.deltas[bench.lb.name]])
    record = {
        "offered_rps": round(rate, 1),
        "seconds": seconds,
        "achieved_rps": round(trial.achieved_rps, 1),
        "sent": sent,
        "completed": completed,
        "failed": trial.failed,
        "latency_ms": {"p50": trial.p50_ms, "p99": trial.p99_ms, "p99.9": trial.p999_ms},
        "cpu": trial.cpu,  # the guests' busy share
        # over the reading's window (the load, its start lead and its last answers): `read_s`
        "hypervisor_cpu_s": {name: round(ns / 1e9, 2) for name, ns in measured.cpu_ns.items()},
        "read_s": measured.timing_s.get("load"),
        "hosts_busy": busy_hosts,  # each host's share of its CPUs the lab's VMs used over `read_s`
        "lb_bytes_per_request": round((lb["rx_bytes"] + lb["tx_bytes"]) / completed) if completed else 0,
        "per_second": per_second,  # [completed with a 2xx, failed] each second, over the clients
        "behind_ms": {c.name: s["behind_ms"] for c, s in zip(bench.clients, sums, strict=True)},
        "invalid": list(invalid),
    }
    return trial, record


def point(
    ssh: Ssh,
    readers: counters.Readers,
    bench: BenchSpec,
    test: str,
    kib: int,
    threads: int,
    out: Path,
    cpus: dict[str, int],
) -> dict:
    settings = bench.search
    assert settings is not None
    keepalive = SEARCH_TESTS[test]
    how = Search(
        Criteria(max_failed_pct=settings.max_failed_ppm / 1e4, p99_ms=float(settings.p99_ms)),
        start_rps=float(settings.start_rps or bench.search_start_rps or 100),
        floor_rps=float(len(bench.clients)),  # one request a second from each client
        precision=settings.precision_pct / 100,
        max_trials=settings.max_trials,
        trial_s=float(settings.trial_s),
        confirm_s=float(settings.confirm_s),
    )
    tag = f"search-{test}-{kib}k-t{threads}"
    records: list[dict] = []

    def run_trial(rate: float, seconds: float) -> Trial:
        runtime.check_cancelled("capacity search")
        work = loads(bench, rate, seconds, keepalive, kib)
        measured = measure(
            ssh, readers, bench, None, f"{tag}-{len(records) + 1}", out, not records, (TOOL, work), kib * 1024
        )
        trial, record = trial_of(bench, rate, seconds, measured.texts, measured, cpus)
        records.append(record)
        runtime.log(
            f"{bench.mode} search {test} {kib} KiB{f' {threads} thread(s)' if bench.retunes else ''}: trial "
            f"{len(records)} at {rate:,.0f}/s for {seconds:.0f} s: {trial.achieved_rps:,.0f}/s, {trial.failed} failed, "
            f"p99 {trial.p99_ms:.1f} ms" + (f"; invalid: {'; '.join(trial.invalid)}" if trial.invalid else "")
        )
        return trial

    found = search(run_trial, how)
    for record, (_, verdict) in zip(records, found.trials, strict=True):
        record["passed"], record["failed_criteria"] = verdict.passed, list(verdict.failed_criteria)
    at_half = {}
    if found.rate_rps:  # CSIT's practice: latency at half the capacity, on a trial of its own
        trial = run_trial(found.rate_rps / 2, how.trial_s)
        at_half = {"offered_rps": round(found.rate_rps / 2, 1), "p50": trial.p50_ms, "p99": trial.p99_ms}
        at_half["p99.9"] = trial.p999_ms
        verdict = judge(trial, how.criteria)
        records[-1].update(at_half=True, passed=verdict.passed, failed_criteria=list(verdict.failed_criteria))
    return {
        "mode": bench.mode,
        "test": test,
        "keepalive": keepalive,
        "size_kib": kib,
        "threads": threads,
        "rate_rps": round(found.rate_rps, 1),
        "gbps": round(found.rate_rps * kib * 1024 * 8 / 1e9, 4),  # of response payload
        "confirmed": found.confirmed,
        "stopped": found.stopped,
        "failed_rps": round(found.failed_rps, 1),
        "bound": bound_of(found),
        "latency_at_half_ms": at_half,
        "criteria": {"max_failed_ppm": settings.max_failed_ppm, "p99_ms": settings.p99_ms},
        "trials": records,
    }


def write_files(ssh: Ssh, bench: BenchSpec, sizes: tuple[int, ...]) -> None:
    """Each web serves a file per size, written now (not by cloud-init: turning the search on or off
    then rebuilds no web), and read back whole through nginx."""

    def write(web) -> None:
        for kib in sizes:
            path = f"{NGINX_ROOT}/{search_file(kib)}"
            ssh.run(web.address, f"head -c {kib * 1024} /dev/zero | tr '\\0' x | sudo tee {path} >/dev/null")
            got = ssh.run(
                web.address, f"curl -s -o /dev/null -w '%{{http_code}} %{{size_download}}' {LOCAL}/{search_file(kib)}"
            )
            if got.stdout.split() != ["200", str(kib * 1024)]:
                raise BenchmarkFailed(f"{web.name}: /{search_file(kib)} was written but nginx serves {got.stdout!r}")

    runtime.at_once(write, list(bench.webs))


def run(ssh: Ssh, readers: counters.Readers, bench: BenchSpec, out: Path, doing: list[str], retune: Callable) -> list:
    """Every point, the LB's thread steps outermost (a retune between them), back to its threads after."""
    settings = bench.search
    assert settings is not None
    doing[0] = "writing the search's files on the webs"
    write_files(ssh, bench, settings.file_sizes_kib)
    cpus = host_cpus(bench.vms)
    points, current = [], bench.lb_threads
    try:
        for threads in bench.lb_steps:
            if threads != current:
                doing[0] = f"changing the LB to {threads} thread(s) for the search"
                retune(ssh, bench, threads)
                current = threads
            for test in settings.tests:
                for kib in settings.file_sizes_kib:
                    doing[0] = f"the capacity search ({test}, {kib} KiB, {threads} thread(s))"
                    points.append(point(ssh, readers, bench, test, kib, threads, out, cpus))
                    p = points[-1]
                    runtime.log(
                        f"{bench.mode} capacity, {test}, {kib} KiB: {p['rate_rps']:,.0f}/s ({p['gbps']:.3f} Gbit/s), "
                        f"bound by {p['bound']}, {len(p['trials'])} trials, stopped at {p['stopped']}"
                    )
    finally:
        if current != bench.lb_threads:
            retune(ssh, bench, bench.lb_threads, cancellable=False)
    return points
