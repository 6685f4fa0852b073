"""What the benchmark's runner spends around the load, per step, as the lab grows: on a deployed lab,
the runner's own `run_step` timed against the load's own window, with 2, 7 and 25 of its webs.

    ./labctl sh .venv/bin/python tests/overhead_bench.py [--stack lab] [--webs 2,7,25]
        [--steps 3] [--concurrency 20] [--requests 1000] [--source DIR]

A step's overhead is its wall time minus the load's window (the clients' runs merged on the host's
clock): the settle wait, the counters before and after, the clocks, the warm-up, SSH set-up, the
clients' common start. With fewer webs than the lab has, the runner reads only those (the load
still spreads over all of them): what a lab of that size costs the runner. `--source DIR` times
another checkout's runner on the same lab (e.g. `git worktree add /tmp/before <rev>`), for a
before/after on the same guests. Prints one Markdown row per web count; writes the records to
results/measurements/overhead-<stack>-<label>.json. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent


def pulumi(stack: str, *args: str) -> str:
    return subprocess.run(
        [str(PROJECT / "labctl"), "pulumi", *args, "--stack", stack], capture_output=True, text=True, check=True
    ).stdout


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stack", default="lab")
    parser.add_argument("--webs", default="2,7,25")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--source", default=str(PROJECT), help="the checkout whose runner is timed")
    parser.add_argument("--label", default="")
    args = parser.parse_args(argv)
    source = Path(args.source).resolve()
    sys.path.insert(0, str(source))
    from bench import runner
    from bench.matrix import Step
    from hypervisor.vmssh import private_key as private_key_of
    from lab.config import stack_values
    from runtime.ssh import KeyFile, Ssh
    from runtime.vm import VmRef

    try:  # this checkout's layout
        from bench.spec import bench_spec
        from resolution import configure

        lab = configure(stack_values(args.stack, PROJECT))
        spec, mode, lab_plan = lab.spec, lab.mode, lab.plan
    except ImportError:  # a --source from before bench/spec.py and resolution/
        from components.benchmark import bench_spec  # type: ignore[no-redef]
        from lab.addressing import plan
        from lbmodes import load_lab

        spec, mode = load_lab(stack_values(args.stack, PROJECT))
        lab_plan = plan(spec)
    state = json.loads(pulumi(args.stack, "stack", "export", "--show-secrets"))
    refs = {
        g["name"]: VmRef(g["name"], g["role"], g["address"], g["domain"], g["console_log"])
        for g in (r["outputs"]["guest"] for r in state["deployment"]["resources"] if r["type"].endswith(":VmReady"))
    }
    if "lab" in inspect.signature(bench_spec).parameters:  # bench_spec(stack, lab, vms): the lab as resolved
        base = bench_spec(f"{args.stack}-overhead", lab, refs)
    else:  # a --source from before: the lab's parts one by one
        base = bench_spec(f"{args.stack}-overhead", spec, mode, lab_plan, refs)
    base = dataclasses.replace(
        base, concurrency=(args.concurrency,), requests=(args.requests,), repeats=1, lb_steps=(base.lb_threads,)
    )
    label = args.label or ("this checkout" if source == PROJECT else source.name)
    rows, records = [], {}
    with KeyFile(private_key_of(state)) as key_file:
        plain = Ssh("lab", key_file)
        mux = plain.multiplexed() if hasattr(plain, "multiplexed") else contextlib.nullcontext(plain)
        with mux as ssh, tempfile.TemporaryDirectory() as out:
            p0 = dataclasses.replace(base, fault=None)
            started = time.monotonic()
            if hasattr(ssh, "connect"):
                ssh.connect([vm.address for vm in p0.vms])
            connect_s = time.monotonic() - started
            for count in [int(n) for n in args.webs.split(",")]:
                p = dataclasses.replace(p0, webs=base.webs[:count])
                if count > len(base.webs):
                    print(f"skipping {count} webs: the lab has {len(base.webs)}", file=sys.stderr)
                    continue
                overheads, parts = [], []
                # The benchmark's reading processes, opened once per benchmark (where the runner has them).
                readers = runner.readers_of(ssh, p) if hasattr(runner, "readers_of") else contextlib.nullcontext()
                with readers as opened:
                    for i in range(args.steps):
                        step = Step(base.lb_threads, args.concurrency, args.requests, i + 1)
                        start = time.monotonic()
                        # As the runner does: a warm-up before the first step only (where it has the choice).
                        extra = (opened, i == 0) if opened is not None else ()
                        record = runner.run_step(ssh, p, step, Path(out), *extra)
                        wall = time.monotonic() - start
                        overheads.append(round(wall - record["window_s"], 2))
                        parts.append(record.get("timing_s", {}))
                        records.setdefault(str(count), []).append(
                            {
                                "wall_s": round(wall, 2),
                                "window_s": record["window_s"],
                                "timing_s": record.get("timing_s"),
                            }
                        )
                rows.append(
                    f"| {label} | {count} | {len(p.vms)} | {statistics.median(overheads):.1f} "
                    f"({min(overheads):.1f}-{max(overheads):.1f}) | "
                    + (
                        ", ".join(
                            f"{k} {statistics.median(x.get(k, 0) for x in parts):.1f}"
                            for k in parts[0]
                            if k not in ("load", "step")
                        )
                        if parts[0]
                        else "-"
                    )
                    + " |"
                )
    print(f"\nconnections opened once per benchmark: {connect_s:.1f} s ({label})")
    print("| runner | webs read | VMs read | overhead per step, median (min-max), s | parts (median s) |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    target = PROJECT / "results" / "measurements" / f"overhead-{args.stack}-{label.replace(' ', '-')}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps({"connect_s": connect_s, "records": records}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
