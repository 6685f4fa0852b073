"""Soak: `./labctl up` then `./labctl destroy`, again and again, as a user would; every figure recorded.

    python3 tests/soak.py [--fresh] [--proxy N] [--dsr N] [--busy N] [--out FILE]

Runs in this checkout (clone a fresh one first to test a fresh checkout). `--fresh` removes
~/.cache/l2dsr first, so the first `up` builds the image and the engine as on a new machine.
`--busy N` runs N more cycles with a CPU hog pinned to one host core, started and stopped (by PID)
by this script. Each cycle records the `up` time, every VM's boot time and memory after boot, the
benchmark's requests/s, and the `destroy` time; a failed cycle records its error and the run goes
on. The summary (min/median/max) is printed and written as JSON. Not collected by pytest: it takes
about 6 minutes a cycle on a 2-core host without KVM.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
STACK = "lab"


def labctl(*args: str, timeout: float = 5400) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(PROJECT / "labctl"), *args], cwd=PROJECT, capture_output=True, text=True, timeout=timeout
    )


def cpu_hog(core: int) -> subprocess.Popen:
    """A busy loop pinned to one host core: a host that is doing something else."""
    return subprocess.Popen(["taskset", "-c", str(core), sys.executable, "-c", "while True: pass"])


def cycle(mode: str, busy: bool, first: bool) -> dict:
    record: dict = {"mode": mode, "busy": busy}
    # The first cycle is a new user's first `./labctl up`: nothing exists yet, not even the stack,
    # and the lab stack's mode is proxy. Later cycles set the mode on the stack first.
    set_mode = (
        subprocess.CompletedProcess([], 0)
        if first
        else labctl("pulumi", "config", "set", "l2dsr:mode", mode, "--stack", STACK)
    )
    hog = cpu_hog(1) if busy else None
    try:
        start = time.monotonic()
        up = labctl("up", STACK)
        record["up_s"] = round(time.monotonic() - start, 1)
    finally:
        if hog:
            hog.kill()
            hog.wait()
    record["ok"] = up.returncode == 0 and set_mode.returncode == 0
    if set_mode.returncode != 0:
        record["error"] = f"config set mode {mode}: {set_mode.stderr[-2000:]}"
    elif record["ok"]:
        out = json.loads(labctl("pulumi", "stack", "output", "--json", "--stack", STACK).stdout)
        record["boot"] = out["boot"]
        record["requests_per_second"] = [r["requestsPerSecond"] for r in out["summary"]]
        record["results_dir"] = out["resultsDir"]
    else:
        record["error"] = (up.stdout + up.stderr)[-6000:]
    start = time.monotonic()
    down = labctl("destroy", STACK)
    record["destroy_s"] = round(time.monotonic() - start, 1)
    record["destroy_ok"] = down.returncode == 0
    return record


def spread(values: list[float]) -> dict:
    if not values:
        return {}
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "n": len(values)}


def summarize(records: list[dict]) -> dict:
    ok = [r for r in records if r["ok"]]
    boots = [b["seconds"] for r in ok for b in r["boot"].values()]
    available = [b["memoryAvailableMiB"] for r in ok for b in r["boot"].values()]
    by_role: dict[str, list[float]] = {}
    for r in ok:
        for name, b in r["boot"].items():
            by_role.setdefault(name.rstrip("0123456789"), []).append(b["seconds"])
    return {
        "cycles": len(records),
        "succeeded": len(ok),
        "by_kind": {
            kind: f"{sum(r['ok'] for r in records if key(r) == kind)}/{sum(1 for r in records if key(r) == kind)}"
            for kind in sorted({key(r) for r in records})
        },
        "up_s": [r["up_s"] for r in records],
        "destroy_s": [r["destroy_s"] for r in records],
        "boot_s": spread(boots),
        "boot_s_by_role": {role: spread(v) for role, v in by_role.items()},
        "memory_available_after_boot_mib": spread(available),
        "resets": sum(b["resets"] for r in ok for b in r["boot"].values()),
    }


def key(record: dict) -> str:
    return f"{record['mode']}{' busy' if record['busy'] else ''}"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fresh", action="store_true", help="remove ~/.cache/l2dsr first")
    ap.add_argument("--proxy", type=int, default=3)
    ap.add_argument("--dsr", type=int, default=3)
    ap.add_argument("--busy", type=int, default=3)
    ap.add_argument("--out", default=str(PROJECT / "results" / "measurements" / "soak.json"))
    args = ap.parse_args(argv)
    if args.fresh:
        shutil.rmtree(Path(os.environ.get("L2DSR_CACHE") or Path.home() / ".cache" / "l2dsr"), ignore_errors=True)
    plan = [("proxy", False)] * args.proxy + [("dsr", False)] * args.dsr
    plan += [("proxy" if i % 2 == 0 else "dsr", True) for i in range(args.busy)]
    records = []
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for n, (mode, busy) in enumerate(plan, 1):
        record = cycle(mode, busy, first=n == 1)
        records.append(record)
        state = "ok" if record["ok"] else "FAILED"
        print(
            f"cycle {n}/{len(plan)} {key(record)}: {state}, up {record['up_s']} s, destroy {record['destroy_s']} s",
            flush=True,
        )
        out.write_text(json.dumps({"summary": summarize(records), "cycles": records}, indent=1))
    summary = summarize(records)
    print(json.dumps(summary, indent=1))
    return 0 if summary["succeeded"] == len(records) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
