"""The Pulumi CLI's first build, optimised (what ./labctl builds) against unoptimised
(`-gcflags=all=-N -l`), and what each costs the engine: the wall time of a preview of a 27-VM stack
with each binary. The question: is the first run's longest step worth shortening this way?

    ./labctl pulumi stack init seed25 --non-interactive; ./labctl pulumi stack select lab   # the stack to preview
    .venv/bin/python tests/cli_build_bench.py [--builds 1] [--previews 3] [--stack seed25] [--out FILE]

`--builds 0` previews with the binaries a former run kept (in the cache), adding to its record.

Each build is cold (a Go build cache of its own, removed afterwards; the modules already fetched by
./labctl setup), the two variants in turn (A B A B). Each preview runs the lab's program and
providers the same way; only the engine's binary differs, so the difference between the two medians
is the engine's own. Run it after `./labctl setup`, on a host doing nothing else that matters: a
build takes minutes on 2 cores. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from hypervisor import libvirt, paths, pulumi_cli  # noqa: E402

VARIANTS = {
    "optimised": [],  # today's: ./labctl's build
    "unoptimised": ["-gcflags=all=-N -l"],
}


def build(variant: str, out: Path) -> dict[str, float]:
    """One cold build of the CLI as hypervisor/pulumi_cli.py builds it, plus the variant's flags."""
    src = pulumi_cli.cached_cli().parent.parent / f"src-{pulumi_cli.CLI_VERSION}"
    with tempfile.TemporaryDirectory(prefix="gocache-") as cache:
        env = {**os.environ, "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0", "GOCACHE": cache}
        argv = [
            shutil.which("go") or "go",
            "build",
            "-trimpath",
            "-tags",
            "osusergo,grpcnotrace",
            *VARIANTS[variant],
            "-ldflags",
            f"-s -w -X {pulumi_cli.VERSION_VAR}={pulumi_cli.CLI_VERSION}",
            "-o",
            str(out),
            pulumi_cli.CLI_PACKAGE,
        ]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.monotonic()
        done = subprocess.run(argv, cwd=src, env=env, capture_output=True, text=True)
        wall = time.monotonic() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"go build ({variant}) failed:\n{done.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "size_mib": round(out.stat().st_size / 2**20, 1)}


def engine_dir(binary: Path, where: Path) -> Path:
    """A bin directory like .state/bin: this CLI with our language host and provider launchers beside it."""
    where.mkdir(parents=True, exist_ok=True)
    shutil.copy2(binary, where / "pulumi")
    for launcher in pulumi_cli.LAUNCHERS:
        shutil.copy2(pulumi_cli.bin_dir() / launcher, where / launcher)
    return where


def preview(bin_dir: Path, stack: str) -> float:
    rec = libvirt.read_record()
    env = pulumi_cli.pulumi_env()
    env["PATH"] = os.pathsep.join([str(bin_dir), env["PATH"]])
    argv = [*libvirt.in_namespace(rec), str(bin_dir / "pulumi"), "preview", "--stack", stack, "--non-interactive"]
    start = time.monotonic()
    done = subprocess.run(argv, cwd=PROJECT, env=env, capture_output=True, text=True, timeout=1800)
    wall = time.monotonic() - start
    if done.returncode != 0:
        raise SystemExit(f"preview of {stack} with {bin_dir / 'pulumi'} failed:\n{done.stdout[-3000:]}")
    return round(wall, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--builds", type=int, default=1, help="cold builds of each variant")
    parser.add_argument("--previews", type=int, default=3, help="previews with each binary")
    parser.add_argument("--stack", default="seed25", help="the stack previewed (seed25: 27 VMs)")
    parser.add_argument("--out", default=str(PROJECT / "results" / "measurements" / "cli-build.json"))
    args = parser.parse_args()
    out = Path(args.out)
    found: dict = json.loads(out.read_text()) if out.exists() and not args.builds else {}
    found.setdefault("builds", {v: [] for v in VARIANTS})
    found["stack"] = args.stack
    work = paths.cache_dir() / "cli-bench"  # the binaries, kept for a later --builds 0 (previews only)
    work.mkdir(parents=True, exist_ok=True)
    binaries = {v: work / f"pulumi-{v}" for v in VARIANTS}
    for i in range(args.builds):
        for variant in VARIANTS:
            found["builds"][variant].append(build(variant, binaries[variant]))
            print(f"build {i + 1} {variant}: {found['builds'][variant][-1]}", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(found, indent=1))  # the builds kept, whatever the previews do
    med: dict = {v: {} for v in VARIANTS}
    if all(found["builds"][v] for v in VARIANTS):
        for v in VARIANTS:
            med[v]["build_wall_s"] = statistics.median(b["wall_s"] for b in found["builds"][v])
            med[v]["build_cpu_s"] = statistics.median(b["cpu_s"] for b in found["builds"][v])
        for figure in ("wall", "cpu"):
            key = f"build_{figure}_s"
            found[f"build_{figure}_saving"] = round(1 - med["unoptimised"][key] / med["optimised"][key], 3)
    if args.previews:
        from hypervisor.__main__ import stack_file_from_template

        stack_file_from_template(args.stack)  # the shipped stack's file, when this checkout has none
        found["previews_s"] = {v: [] for v in VARIANTS}
        dirs = {v: engine_dir(binaries[v], work / f"bin-{v}") for v in VARIANTS}
        preview(dirs["optimised"], args.stack)  # warm-up: the program's first import, the providers' start
        for i in range(args.previews):
            for variant in VARIANTS:
                found["previews_s"][variant].append(preview(dirs[variant], args.stack))
                print(f"preview {i + 1} {variant}: {found['previews_s'][variant][-1]} s", flush=True)
        for v in VARIANTS:
            med[v]["preview_s"] = statistics.median(found["previews_s"][v])
        found["preview_spread_s"] = {v: [min(p), max(p)] for v, p in found["previews_s"].items()}
    found["medians"] = med
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(found, indent=1))
    print(json.dumps(found, indent=1))


if __name__ == "__main__":
    main()
