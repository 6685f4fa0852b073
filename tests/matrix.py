"""The load matrix on a deployed lab: 1 and 2 clients x ab and wrk x keep-alive off and on, in the
stack's current mode, with the benchmark's own runner (the same checks, counters and merging).

    ./labctl pulumi config set clientCount 2 && ./labctl up        # a lab with two clients
    ./labctl sh .venv/bin/python tests/matrix.py [--stack lab] [--concurrency 20] [--requests 2000]

Run it once per mode (`./labctl pulumi config set mode dsr && ./labctl up`, then again); each run
saves its results under results/<stack>-matrix/ and prints one row per combination: requests/s,
merged p50/p99, requests and connections per web, flags. `./labctl report results/<stack>-matrix`
puts the modes side by side. Not collected by pytest: about 8 runs of 15-40 s under emulation.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from bench.runner import run  # noqa: E402
from bench.spec import bench_spec  # noqa: E402
from hypervisor.vmssh import private_key as private_key_of  # noqa: E402
from lab.config import stack_values  # noqa: E402
from resolution import configure  # noqa: E402
from runtime.ssh import KeyFile, Ssh  # noqa: E402
from runtime.vm import VmRef  # noqa: E402


def pulumi(stack: str, *args: str) -> str:
    return subprocess.run(
        [str(PROJECT / "labctl"), "pulumi", *args, "--stack", stack], capture_output=True, text=True, check=True
    ).stdout


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stack", default="lab")
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args(argv)
    lab = configure(stack_values(args.stack))
    state = json.loads(pulumi(args.stack, "stack", "export", "--show-secrets"))
    resources = state["deployment"]["resources"]
    key = private_key_of(state)
    refs = {
        g["name"]: VmRef(g["name"], g["role"], g["address"], g["domain"], g["console_log"])
        for g in (r["outputs"]["guest"] for r in resources if r["type"].endswith(":VmReady"))
    }
    base = bench_spec(f"{args.stack}-matrix", lab, refs)
    base = dataclasses.replace(
        base, concurrency=(args.concurrency,), requests=(args.requests,), repeats=1, lb_steps=(base.lb_threads,)
    )
    rows = []
    with KeyFile(key) as key_file, Ssh("lab", key_file).multiplexed() as ssh:
        for clients in (1, 2):
            for tool in ("ab", "wrk"):
                for keepalive in (False, True):
                    p = dataclasses.replace(base, clients=base.clients[:clients], tool=tool, keepalive=keepalive)
                    r = run(p, ssh, str(PROJECT / "results"))["runs"][0]
                    pct = r["latency_percentiles_ms"]
                    rows.append(
                        f"| {lab.mode.name} | {clients} | {tool} | {'on' if keepalive else 'off'} | "
                        f"{r['total_requests']:,} | {r['requests_per_second']:,.1f} | {pct['p50']:.1f} | "
                        f"{pct['p99']:.1f} | {r['requests_per_web']} | {r['connections_per_web']} | "
                        f"{'; '.join(r['flags']) or '-'} |"
                    )
                    print(rows[-1], flush=True)
    print(
        "| Mode | Clients | Tool | Keep-alive | Requests | Requests/s | p50 (ms) | p99 (ms) | Requests per web "
        "| Connections per web | Flags |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
