"""Run the benchmark on a deployed lab, from the host, over SSH; return JSON-able results.

Orchestration only; the parts are pure or small: the matrix (matrix.py), the load tools
(loadtools/), the counters read around each run (counters.py), the checks before and between runs
(probes.py), and the judgement of a run against its mode (judge.py).

Steps (every VM is ready: the readiness resources waited for each): the VIP answers and every web
server is reached through it; then each load run is measured with the LB's, the clients' and the
webs' interface byte counters and nginx's access logs around it. The bytes prove the mode (its
`ShareRule`); a run outside them fails, with the likely cause. An out-of-memory kill on any VM's
console during the run fails it, naming the VM (a result from an OOM-killed web is not a result).
Cancelling (Ctrl-C in `pulumi up`) stops the local SSH sessions and the load tools on the clients
within seconds. Raw output is kept under results/<stack>/<time>/; a run that fails leaves a FAILED
note there.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import time
from pathlib import Path

import loadtools
import runtime
from bench import clocks, counters, faultrun, judge, probes, searchrun, timeline
from bench.matrix import Step, steps, summarize
from bench.measure import START_LEAD_S, measure, on_clients, place_runs, readers_of
from bench.parse import ParseError, combine
from bench.probes import BenchmarkFailed
from bench.spec import BenchSpec, FaultPlan
from runtime.hostfacts import atomic_write
from runtime.ssh import Ssh, SshError
from runtime.vm import VmRef

__all__ = ["BenchmarkFailed", "run"]


def retune(ssh: Ssh, bench: BenchSpec, threads: int, cancellable: bool = True) -> None:
    """Run the LB with `threads` for the next steps: the mode's re-rendered files, applied, then checked.
    Not `cancellable`: putting the LB back after a cancel (it runs to its end, bounded by its timeouts)."""
    change = bench.retunes[str(threads)]
    for f in change.files:
        data = base64.b64encode(f.content.encode()).decode()
        command = f"echo {data} | base64 -d | sudo install -m {f.permissions} /dev/stdin {f.path}"
        ssh.run(bench.lb.address, command, cancellable=cancellable)
    ssh.run(bench.lb.address, f"sudo sh -c '{change.apply}'", cancellable=cancellable)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if (
            change.expect
            in ssh.run(bench.lb.address, change.check, check=False, cancellable=cancellable).stdout.split()
        ):
            return
        if cancellable:
            runtime.sleep(1, f"benchmark: waiting for the LB to run {threads} thread(s)")
        else:
            time.sleep(1)
    raise BenchmarkFailed(
        f"{bench.lb.name}: the LB did not come back with {threads} thread(s) within 60 s "
        f"(`{change.check}` never listed {change.expect})"
    )


def run_step(
    ssh: Ssh, bench: BenchSpec, step: Step, out: Path, readers: counters.Readers | None = None, warm: bool = True
) -> dict:
    """One run of a step, judged and recorded; `readers` the benchmark's (else opened for this step).
    `warm`: a warm-up first (the first step, and the first after the LB changed: the runs before
    warmed every path of the others)."""
    if readers is None:
        with readers_of(ssh, bench) as opened:
            return run_step(ssh, bench, step, out, opened, warm)
    tag = f"t{step.threads}-c{step.concurrency}-n{step.requests}-r{step.repeat}"
    started = time.monotonic()
    m = measure(ssh, readers, bench, step, tag, out, warm)
    placed, settled, deltas, cpu, webs = m.placed, m.settled, m.deltas, m.cpu, m.webs
    step_s = time.monotonic() - started
    lb_bytes = counters.bytes_of([deltas[bench.lb.name]])
    client_bytes = counters.bytes_of([deltas[c.name] for c in bench.clients])
    tool = loadtools.TOOLS[bench.tool]
    combined = combine(placed, tool.rank, tool.grid_pct)
    per_web = {name: w.requests for name, w in webs.items()}
    connections = {name: w.accepted for name, w in webs.items()}
    balance = judge.balance_flag(bench.balances, connections if bench.balances == "connections" else per_web)
    record = {
        "mode": bench.mode,
        "scheme": bench.scheme,
        "lb_threads": step.threads,
        "repeat": step.repeat,
        "total_requests_asked": step.requests,
        "file_size_bytes": bench.file_size_bytes,
        **combined,
        "balanced_by": bench.balances,
        "per_client": [{"client": pl.client, **pl.run.as_dict()} for pl in placed],
        "requests_per_web": per_web,
        "connections_per_web": connections,
        "lb_bytes": lb_bytes,
        "client_bytes": client_bytes,
        "lb_sent_share": round(lb_bytes["tx_bytes"] / max(1, client_bytes["rx_bytes"]), 4),
        "lb_response_share": round(judge.response_share(lb_bytes, client_bytes), 4),
        "lb_bytes_per_request": round(
            (lb_bytes["rx_bytes"] + lb_bytes["tx_bytes"]) / max(1, combined["total_requests"]), 1
        ),
        "cpu_busy": cpu,
        "counters": deltas,
        "before_run": settled,
        # Wall time of the step's parts, and what the runner spent around the load (benchmark overhead).
        "timing_s": {**m.timing_s, "step": round(step_s, 2)},
        "overhead_s": round(step_s - m.timing_s["load"], 2),
        "flags": judge.flags_of(deltas, cpu, list(bench.clients))
        + ([balance] if balance else [])
        + ([f"connections still open: {settled['unsettled']}"] if "unsettled" in settled else []),
    }
    atomic_write(out / f"{tag}.json", json.dumps(record, indent=1), mode=0o644)
    problem = judge.mode_problem(bench.mode, bench.shares, lb_bytes, client_bytes)
    if problem:
        raise BenchmarkFailed(f"{tag}: {problem} (raw output and counters in {out})")
    return record


def run_fault(ssh: Ssh, readers: counters.Readers, bench: BenchSpec, plan: FaultPlan, out: Path) -> dict:
    """The fault run (bench/faultrun.py): load for `plan.seconds` while one web fails and comes back."""
    tool = loadtools.TOOLS[bench.tool]
    work = faultrun.loads(bench.url, plan, len(bench.clients), bench.keepalive)
    web = next(w for w in bench.webs if w.name == plan.fault.web)
    probes.settle(readers)
    offsets, measured_at = clocks.measure_all(ssh, bench.vms)
    faultrun.start_samplers(ssh, plan, bench.lb, list(bench.clients), list(bench.webs), plan.seconds + 60)

    def load(t0: float) -> list[str]:
        return on_clients(
            bench,
            lambda i: (
                ssh.run(
                    bench.clients[i].address,
                    tool.run(work[i], int((t0 + offsets[bench.clients[i].name].seconds) * 1e9)),
                    timeout=plan.seconds + 600,
                    check=False,
                ).stdout
            ),
        )

    texts, t0, times = faultrun.run_during(load, plan, faultrun.Injector(ssh, plan, web), START_LEAD_S)
    samples = faultrun.collect(ssh, bench.vms)
    after, after_at = clocks.measure_all(ssh, bench.vms)
    lines = {n: timeline.Clock(measured_at, offsets[n].seconds, after_at, after[n].seconds) for n in offsets}
    if plan.fault.action == "kill-web" and "restore" in times:  # its clock stood still while it was paused
        lines[web.name] = dataclasses.replace(lines[web.name], paused_until=t0 + times["restore"])
    placed = place_runs(bench, "fault", texts, work, [offsets[c.name] for c in bench.clients], out)
    combined = combine(placed, tool.rank, tool.grid_pct)
    rec = faultrun.record(
        plan,
        samples,
        lines,
        t0,
        times,
        bench.lb.name,
        [c.name for c in bench.clients],
        [w.name for w in bench.webs],
    )
    rec = {
        "mode": bench.mode,
        **rec,
        "concurrency": combined["concurrency"],
        "total_requests": combined["total_requests"],
        "failed_requests": combined["failed_requests"],
        "non_2xx_responses": combined["non_2xx_responses"],
        "requests_per_second": combined["requests_per_second"],
        "latency_percentiles_ms": combined["latency_percentiles_ms"],
        "window_s": combined["window_s"],
        "started_at": round(t0, 3),  # the host's clock: with the offsets, the raw samples' time line
        # Each VM's clock - the host's, before and after the run (they drift apart under load).
        "clock_offsets_s": {name: [round(offsets[name].seconds, 4), round(after[name].seconds, 4)] for name in offsets},
    }
    rec["flags"] = faultrun.flags(rec, rec["failed_requests"] + rec["non_2xx_responses"])
    faultrun.write(out, rec, samples)
    return rec


def stop_load_tools(ssh: Ssh, clients: tuple[VmRef, ...]) -> None:
    """Best effort, after a cancel or a failure: no load tool left running on a client."""
    kill = "; ".join(f"sudo pkill -x {name}" for name in loadtools.TOOLS) + "; true"
    for c in clients:
        with contextlib.suppress(SshError):
            ssh.run(c.address, kill, timeout=20, check=False, cancellable=False)


def run(bench: BenchSpec, ssh: Ssh, results_dir: str) -> dict:
    out = Path(results_dir) / bench.stack / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out.mkdir(parents=True, exist_ok=True)
    doing = ["checking the paths through the VIP"]  # what the run is at, for the failure's message
    try:
        return _run(bench, ssh, out, doing)
    except BaseException as e:
        failure: BaseException = probes.readable(e, bench.vms, doing[0]) if isinstance(e, SshError) else e
        if isinstance(e, (BenchmarkFailed, ParseError, faultrun.FaultFailed)) and not str(e).startswith("benchmark"):
            # A parse error here is the clients' combined output (a tool's own is named in measure())
            failure = BenchmarkFailed(f"benchmark, {doing[0]}: {e} (raw output in {out})")
        (out / "FAILED").write_text(f"{type(failure).__name__}: {failure}\n")
        if isinstance(e, (runtime.Cancelled, SshError, BenchmarkFailed, ParseError, faultrun.FaultFailed)):
            stop_load_tools(ssh, bench.clients)
        if failure is e:
            raise
        raise failure from None


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


def _run(bench: BenchSpec, ssh: Ssh, out: Path, doing: list[str]) -> dict:
    oom = probes.OomWatch(bench.vms)
    # The reading processes start (a sudo each: seconds of a 27-VM lab's CPU) while the paths are checked.
    with readers_of(ssh, bench) as readers:
        probes.check_paths(
            ssh, bench.url, bench.vip, bench.lb_mac, bench.file_size_bytes, bench.clients[0], list(bench.webs)
        )
        return _runs(bench, ssh, readers, out, doing, oom)


def _runs(
    bench: BenchSpec, ssh: Ssh, readers: counters.Readers, out: Path, doing: list[str], oom: probes.OomWatch
) -> dict:
    matrix = steps(bench.lb_steps, bench.concurrency, bench.requests, bench.repeats)
    runs, current = [], bench.lb_threads
    try:
        for i, step in enumerate(matrix, 1):
            runtime.check_cancelled("benchmark")
            warm = i == 1
            if step.threads != current:
                doing[0] = f"changing the LB to {step.threads} thread(s)"
                retune(ssh, bench, step.threads)
                current, warm = step.threads, True
            doing[0] = f"run {i} of {len(matrix)} (concurrency {step.concurrency}, repeat {step.repeat})"
            runs.append(run_step(ssh, bench, step, out, readers, warm))
            oom.check(f"during run {i} of {len(matrix)}")
            r = runs[-1]
            # Each step stays in `pulumi up`'s output as it completes (not only in the status column).
            threads = f"{step.threads} thread(s), " if bench.retunes else ""
            runtime.log(
                f"{bench.mode} run {i}/{len(matrix)}: {threads}concurrency {step.concurrency}, repeat {step.repeat}: "
                f"{r['total_requests']:,} requests, {r['requests_per_second']:.1f} req/s, "
                f"p50 {r['latency_percentiles_ms'].get('p50', 0):.1f} ms, p99 {r['latency_percentiles_ms'].get('p99', 0):.1f} ms, "
                f"{r['lb_response_share']:.0%} of the responses through the LB, {r['overhead_s']:.1f} s around the load"
                + (f"; flags: {'; '.join(r['flags'])}" if r["flags"] else "")
            )
    finally:
        if current != bench.lb_threads:
            # The LB goes back to what it was deployed with, after a cancel too (Ctrl-C, or the engine
            # gone: engine/healthcheck.py); a kill before it is seen as drift and repaired by `up`.
            doing[0] = f"returning the LB to {bench.lb_threads} thread(s)"
            retune(ssh, bench, bench.lb_threads, cancellable=False)
    fault = None
    if bench.fault:
        doing[0] = f"the fault run ({bench.fault.fault})"
        fault = run_fault(ssh, readers, bench, bench.fault, out)
        oom.check("during the fault run")
        runtime.log(
            f"{bench.mode} fault run ({bench.fault.fault}, {fault['health_check']}): {fault['total_requests']:,} requests, "
            f"{fault['failed_requests'] + fault['non_2xx_responses']} failed, eject "
            f"{_seconds(fault.get('eject_s'))}, readmit {_seconds(fault.get('readmit_s'))}"
            + (f"; flags: {'; '.join(fault['flags'])}" if fault["flags"] else "")
        )
    capacity = None
    if bench.search:
        capacity = searchrun.run(ssh, readers, bench, out, doing, retune)
        oom.check("during the capacity search")
    per_web: dict[str, int] = {}
    for r in runs:
        for name, count in r["requests_per_web"].items():
            per_web[name] = per_web.get(name, 0) + count
    result = {
        "mode": bench.mode,
        "tool": bench.tool,
        "keepalive": bench.keepalive,
        "scheme": bench.scheme,
        "runs": runs,
        "summary": summarize(runs),
        "requests_per_web": per_web,
        **({"fault": fault} if fault else {}),
        **({"capacity": capacity} if capacity is not None else {}),
        # who is who, for the picture of where the bytes went (./labctl graph, the report)
        "vms": [
            {"name": vm.name, "role": vm.role, "host": vm.host.name} for vm in (*bench.clients, bench.lb, *bench.webs)
        ],
        "raw_dir": str(out),
    }
    atomic_write(out / "result.json", json.dumps(result, indent=1), mode=0o644)
    return result
