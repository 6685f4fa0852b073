"""The capacity sweep, on demand: one lab, each mode in turn, the capacity search at every response
size (and each test), then the table, the dsr/proxy ratio per size, what bound each point, latency at
half of each capacity, and, at the rate the closed-loop step (ab) achieved, its p99 beside the
open-loop p99 of the search's trial nearest that rate (what coordinated omission hid): the matrix's
file is set to the smallest swept size for that, so both loads fetch the same file (the seed's 5 KiB
otherwise).

    ./labctl setup && ./labctl sh .venv/bin/python tests/capacity_sweep.py [--stack lab] [--modes proxy,dsr,l3dsr,nat]
        [--sizes 1,16,128,1024] [--tests connections,transactions] [--trial-s 5] [--confirm-s 10]
        [--precision-pct 10] [--max-trials 10]

It sets the stack's mode and search keys (`benchSearch` and the rest), runs `./labctl up` per mode,
and puts the stack file back as it was. Results: results/measurements/capacity-sweep.json, and the
report's charts with the table in results/measurements/capacity-sweep/. Not collected by pytest: an
hour or more under emulation for the full sweep.

    .venv/bin/python tests/capacity_sweep.py --docs-from results/measurements/capacity-sweep.json

writes docs/capacity-sweep.md and its charts (SVG, docs/capacity-sweep/) from a sweep's record
(`--host-cpus N` for a record that predates its `host_cpus`: the CPUs of the host it ran on).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from bench.capacity_report import (  # noqa: E402
    capacity_charts,
    capacity_table,
    closed_against_open,
    closed_open_table,
    host_table,
    ratio_table,
    ratios,
)
from lab.config import stack_file  # noqa: E402


def labctl(*args: str) -> str:
    done = subprocess.run(
        [str(PROJECT / "labctl"), *args], cwd=PROJECT, capture_output=True, text=True, timeout=4 * 3600
    )
    if done.returncode != 0:
        raise SystemExit(f"./labctl {' '.join(args)} failed:\n{done.stdout[-4000:]}\n{done.stderr[-2000:]}")
    return done.stdout


def newest_result(stack: str) -> dict:
    runs = sorted((PROJECT / "results" / stack).glob("*/result.json"))
    if not runs:
        raise SystemExit(f"no result.json under results/{stack}/ after ./labctl up {stack}")
    return json.loads(runs[-1].read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", default="lab")
    parser.add_argument("--modes", default="proxy,dsr,l3dsr,nat")
    parser.add_argument("--sizes", default="1,16,128,1024")
    parser.add_argument("--tests", default="connections,transactions")
    parser.add_argument("--trial-s", type=int, default=5)
    parser.add_argument("--confirm-s", type=int, default=10)
    parser.add_argument("--precision-pct", type=int, default=10)
    parser.add_argument("--max-trials", type=int, default=10)
    parser.add_argument("--max-minutes", type=int, default=600)
    parser.add_argument("--docs-from", type=Path, help="write docs/capacity-sweep.md from this record and stop")
    parser.add_argument("--host-cpus", type=int, default=0, help="with --docs-from: the host's CPUs, when unrecorded")
    args = parser.parse_args()
    if args.docs_from:
        record = json.loads(args.docs_from.read_text())
        if args.host_cpus and "host_cpus" not in record:
            record["host_cpus"] = {"local": args.host_cpus}
        print(write_docs(record, PROJECT / "docs"))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    path = stack_file(args.stack)
    kept = path.read_text()
    settings = {k: v for k, v in vars(args).items() if k not in ("docs_from", "host_cpus")}
    record: dict = {"settings": settings, "sizes_kib": sizes, "modes": {}, "up_s": {}, "closed_against_open": []}
    record["stack_config"] = yaml.safe_load(kept)["config"]
    record["host_cpus"] = {"local": os.cpu_count()}  # the sweep runs on the lab's host (one-host stacks)
    try:
        for mode in args.modes.split(","):
            doc = yaml.safe_load(path.read_text())
            doc["config"].update(
                {
                    "l2dsr:mode": mode,
                    "l2dsr:benchSearch": True,
                    "l2dsr:benchSearchTests": args.tests.split(","),
                    "l2dsr:benchFileSizesKiB": sizes,
                    "l2dsr:benchFileSizeKiB": min(sizes),  # ab's file one of the searched ones
                    "l2dsr:benchSearchTrialSeconds": args.trial_s,
                    "l2dsr:benchSearchConfirmSeconds": args.confirm_s,
                    "l2dsr:benchSearchPrecisionPct": args.precision_pct,
                    "l2dsr:benchSearchMaxTrials": args.max_trials,
                    "l2dsr:benchMaxMinutes": args.max_minutes,
                    "l2dsr:benchTrigger": f"sweep-{time.time():.0f}",
                }
            )
            path.write_text(yaml.safe_dump(doc))
            start = time.monotonic()
            labctl("up", args.stack)
            record["up_s"][mode] = round(time.monotonic() - start)
            result = newest_result(args.stack)
            if result["mode"] != mode or not result.get("capacity"):
                raise SystemExit(f"the newest result under results/{args.stack}/ is not {mode}'s search")
            record["modes"][mode] = result["capacity"]
            record["vms"] = result["vms"]
            record["closed_against_open"] += closed_against_open(result)
            print(capacity_table(result["capacity"]), flush=True)
            save(record)  # after each mode: a sweep cut short keeps what it measured
    finally:
        path.write_text(kept)
    print(capacity_table([p for ps in record["modes"].values() for p in ps]))
    print(json.dumps({k: record[k] for k in ("ratio_over_proxy", "closed_against_open", "up_s")}, indent=1))


def save(record: dict) -> None:
    points = [p for ps in record["modes"].values() for p in ps]
    record["ratio_over_proxy"] = {
        mode: {f"{t}-{s}k-t{th}": r for (t, s, th), r in ratios(points, mode, "proxy").items()}
        for mode in record["modes"]
        if mode != "proxy"
    }
    out_dir = PROJECT / "results" / "measurements"
    charts = out_dir / "capacity-sweep"
    charts.mkdir(parents=True, exist_ok=True)
    record["charts"] = [str(p) for p in capacity_charts(points, charts, "proxy")]
    (charts / "capacity.md").write_text(capacity_table(points))
    (out_dir / "capacity-sweep.json").write_text(json.dumps(record, indent=1))


def write_docs(record: dict, docs: Path) -> Path:
    """The sweep as a docs page: how it ran, the capacity table, each mode over proxy per size, the
    closed-loop p99 beside the open-loop one, and the charts (SVG beside the page)."""
    points = [p for ps in record["modes"].values() for p in ps]
    charts = docs / "capacity-sweep"
    charts.mkdir(parents=True, exist_ok=True)
    drawn = capacity_charts(points, charts, "proxy", fmt="svg")
    settings = record.get("settings") or {}
    host_cpus = record.get("host_cpus") or {}
    host_of = {vm["name"]: vm["host"] for vm in record.get("vms") or []}
    host_of = {vm: host_of.get(vm, "local") for p in points for t in p["trials"] for vm in t["hypervisor_cpu_s"]}
    shape = {k.split(":", 1)[1]: v for k, v in (record.get("stack_config") or {}).items() if "Search" not in k}
    page = [
        "# The capacity sweep: measured\n",
        "Written by `tests/capacity_sweep.py --docs-from` from the record of one sweep "
        "([capacity.md](capacity.md) says how each point is searched and what bounds it), on a host of "
        + ", ".join(f"{n} CPUs ({h})" for h, n in host_cpus.items())
        + " shared by every VM. Under emulation the absolute rates are this host's, not the modes': the "
        "ratios and the shape of the curves are the result.\n",
        "## How it ran\n",
        f"- Sweep: `{' '.join(f'--{k.replace(chr(95), chr(45))} {v}' for k, v in settings.items())}`"
        if settings
        else "- Sweep: its options are not in this record (it predates their keeping)",
        f"- Stack `{settings.get('stack', 'lab')}` before the sweep set its mode and search keys: "
        + ", ".join(f"`{k}` {v}" for k, v in sorted(shape.items()))
        if shape
        else "- The stack's config is not in this record (it predates its keeping)",
        *[f"- {note}" for note in record.get("notes") or []],
        "- Minutes per mode (`./labctl up`, the matrix's steps and the search): "
        + ", ".join(f"{m} {s / 60:.0f}" for m, s in record["up_s"].items())
        + "\n",
        "## Capacity per point\n",
        capacity_table(points),
        "## What bound each point\n",
        "At the lowest failing trial above each rate found: each host's share of its CPUs the lab's VMs "
        "used (hypervisor CPU seconds over the trial's reading window, which includes its start and its "
        "last answers, so the share under load was higher), and the busiest guest as it saw itself.\n",
        host_table(points, host_of, host_cpus),
        "## Each mode over proxy, like for like\n",
        ratio_table(points, "proxy"),
        "## What coordinated omission hid\n",
        "The matrix's closed-loop step (ab) at the smallest size, beside the search's open-loop trial "
        "offered nearest the rate ab achieved:\n",
        closed_open_table(record["closed_against_open"]),
        "## Charts\n",
        *[f"![{path.stem}](capacity-sweep/{path.name})\n" for path in drawn],
    ]
    out = docs / "capacity-sweep.md"
    out.write_text("\n".join(page))
    return out


if __name__ == "__main__":
    main()
