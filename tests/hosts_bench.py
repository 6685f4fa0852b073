"""One host against two: the lab stack and the same lab split over two simulated hosts
(Pulumi.twohost.yaml: the LB and the client on h1, the webs on h2), each `up` in proxy then dsr,
then destroyed; the `up` times, requests/s per mode, and what the tunnel costs as a ratio.

    python3 tests/hosts_bench.py [--out FILE]

Runs `./labctl hosts up 2` itself and `./labctl hosts down` at the end; the stack files it changes
(l2dsr:mode) are put back. Not collected by pytest: about 20 minutes on a 2-core host without KVM.
Both labs are the same size (1 client, 1 LB, 2 webs, ab, 20 connections, 2,000 requests); the
two-host one runs its guests at MTU 1450 (the tunnel's 50 bytes), which is part of its cost.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

from lab.config import stack_file, stack_template

PROJECT = Path(__file__).resolve().parent.parent
STACKS = ("lab", "twohost")
MODES = ("proxy", "dsr")


def labctl(*args: str, env_stack: str = "") -> subprocess.CompletedProcess:
    done = subprocess.run([str(PROJECT / "labctl"), *args], cwd=PROJECT, capture_output=True, text=True, timeout=5400)
    if done.returncode != 0:
        raise SystemExit(f"./labctl {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}")
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(PROJECT / "results" / "measurements" / "hosts-bench.json"))
    out = Path(parser.parse_args().out)
    for s in STACKS:  # this checkout's stack files, as ./labctl makes them from the templates
        if not stack_file(s).exists():
            stack_file(s).parent.mkdir(exist_ok=True)
            stack_file(s).write_text(stack_template(s).read_text())
    files = {s: stack_file(s).read_text() for s in STACKS}
    measured: dict = {}
    labctl("hosts", "up", "2")
    try:
        for stack in STACKS:
            measured[stack] = {}
            for mode in MODES:
                labctl("pulumi", "config", "set", "l2dsr:mode", mode, "--stack", stack)
                start = time.monotonic()
                labctl("up", stack)
                seconds = round(time.monotonic() - start, 1)
                outputs = json.loads(labctl("pulumi", "stack", "output", "--json", "--stack", stack).stdout)
                run = outputs["results"][-1]
                measured[stack][mode] = {
                    "up_s": seconds,
                    "requests_per_s": run["requestsPerSecond"],
                    "p50_ms": run["latencyPercentilesMs"]["p50"],
                    "p99_ms": run["latencyPercentilesMs"]["p99"],
                    "lb_response_share": run["lbResponseShare"],
                    "flags": run["flags"],
                    "placement": outputs.get("placement", ""),
                }
                print(stack, mode, json.dumps(measured[stack][mode]), flush=True)
            start = time.monotonic()
            labctl("destroy", stack)
            measured[stack]["destroy_s"] = round(time.monotonic() - start, 1)
    finally:
        for stack, text in files.items():
            stack_file(stack).write_text(text)
        subprocess.run([str(PROJECT / "labctl"), "hosts", "down"], cwd=PROJECT)
    if all(m in measured.get(s, {}) for s in STACKS for m in MODES):
        measured["two_over_one"] = {
            m: round(measured["twohost"][m]["requests_per_s"] / measured["lab"][m]["requests_per_s"], 3) for m in MODES
        }
        measured["dsr_over_proxy"] = {
            s: round(measured[s]["dsr"]["requests_per_s"] / measured[s]["proxy"]["requests_per_s"], 3) for s in STACKS
        }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(measured, indent=1))
    print(json.dumps(measured, indent=1))


if __name__ == "__main__":
    main()
