"""The capacity sweep, on demand: one lab, each mode in turn, the capacity search at every response
size (and each test), then the table, the dsr/proxy ratio per size, what bound each point, latency at
half of each capacity, and, at the rate the closed-loop step (ab) achieved, its p99 beside the
open-loop p99 of the search's trial nearest that rate (what coordinated omission hid).

    ./labctl sh .venv/bin/python tests/capacity_sweep.py [--stack lab] [--modes proxy,dsr,l3dsr,nat]
        [--sizes 1,16,128,1024] [--tests connections,transactions] [--trial-s 5] [--confirm-s 10]

It sets the stack's mode and search keys (`benchSearch` and the rest), runs `./labctl up` per mode,
and puts the stack file back as it was. Results: results/measurements/capacity-sweep.json, and the
report's charts with the table in results/measurements/capacity-sweep/. Not collected by pytest: an
hour or more under emulation for the full sweep.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from bench.capacity_report import capacity_charts, capacity_table, ratios  # noqa: E402
from lab.config import stack_file  # noqa: E402


def labctl(*args: str) -> str:
    done = subprocess.run(
        [str(PROJECT / "labctl"), *args], cwd=PROJECT, capture_output=True, text=True, timeout=4 * 3600
    )
    if done.returncode != 0:
        raise SystemExit(f"./labctl {' '.join(args)} failed:\n{done.stdout[-4000:]}\n{done.stderr[-2000:]}")
    return done.stdout


def closed_against_open(out: dict) -> list[dict]:
    """Per searched size equal to the matrix's file: ab's throughput and p99, and the open-loop trial
    whose offered rate is nearest that throughput, with its p99 from each request's due time."""
    rows = []
    file_kib = round(out["results"][0]["fileSizeBytes"] / 1024) if out.get("results") else None
    for step in out.get("results") or []:
        for p in out["capacity"]:
            if int(p["sizeKib"]) != file_kib or bool(p["keepalive"]) != bool(step["keepalive"]):
                continue
            valid = [t for t in p["trials"] if not t["invalid"]]
            if not valid:
                continue
            near = min(valid, key=lambda t: abs(t["offeredRps"] - step["requestsPerSecond"]))
            rows.append(
                {
                    "mode": out["mode"],
                    "sizeKib": file_kib,
                    "abRps": step["requestsPerSecond"],
                    "abP99Ms": step["latencyPercentilesMs"]["p99"],
                    "openLoopOfferedRps": near["offeredRps"],
                    "openLoopP99Ms": near["latencyMs"]["p99"],
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", default="lab")
    parser.add_argument("--modes", default="proxy,dsr,l3dsr,nat")
    parser.add_argument("--sizes", default="1,16,128,1024")
    parser.add_argument("--tests", default="connections,transactions")
    parser.add_argument("--trial-s", type=int, default=5)
    parser.add_argument("--confirm-s", type=int, default=10)
    parser.add_argument("--max-minutes", type=int, default=600)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    path = stack_file(args.stack)
    kept = path.read_text()
    record: dict = {"sizes_kib": sizes, "modes": {}, "up_s": {}, "closed_against_open": []}
    try:
        for mode in args.modes.split(","):
            doc = yaml.safe_load(path.read_text())
            doc["config"].update(
                {
                    "l2dsr:mode": mode,
                    "l2dsr:benchSearch": True,
                    "l2dsr:benchSearchTests": args.tests.split(","),
                    "l2dsr:benchFileSizesKiB": sizes,
                    "l2dsr:benchSearchTrialSeconds": args.trial_s,
                    "l2dsr:benchSearchConfirmSeconds": args.confirm_s,
                    "l2dsr:benchMaxMinutes": args.max_minutes,
                    "l2dsr:benchTrigger": f"sweep-{time.time():.0f}",
                }
            )
            path.write_text(yaml.safe_dump(doc))
            start = time.monotonic()
            labctl("up", args.stack)
            record["up_s"][mode] = round(time.monotonic() - start)
            out = json.loads(labctl("pulumi", "stack", "output", "--json", "--show-secrets", "--stack", args.stack))
            record["modes"][mode] = out["capacity"]
            record["closed_against_open"] += closed_against_open(out)
            print(out["capacityTable"], flush=True)
    finally:
        path.write_text(kept)
    points = [
        {
            "mode": p["mode"],
            "test": p["test"],
            "size_kib": p["sizeKib"],
            "threads": p["threads"],
            "rate_rps": p["rateRps"],
        }
        | {"gbps": p["gbps"], "confirmed": p["confirmed"], "bound": p["bound"], "stopped": p["stopped"]}
        | {"latency_at_half_ms": p["latencyAtHalfMs"], "trials": [_snake(t) for t in p["trials"]]}
        for ps in record["modes"].values()
        for p in ps
    ]
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
    print(capacity_table(points))
    print(json.dumps({k: record[k] for k in ("ratio_over_proxy", "closed_against_open", "up_s")}, indent=1))


def _snake(trial: dict) -> dict:
    """A trial from the stack outputs (camelCase) as the charts read it."""
    return {"offered_rps": trial["offeredRps"], "latency_ms": trial["latencyMs"], "invalid": trial["invalid"]}


if __name__ == "__main__":
    main()
