"""The seed's scale, on demand (`./labctl test -m scale`, about an hour on a 2-core host without KVM).

The scaling curve: `up` from nothing at webCount 2, 7 and 13 (each destroyed after), then the
seed's topology (Pulumi.seed25.yaml: 1 client, the LB, 25 webs): up in proxy mode, switch to dsr
(only the LB and the benchmark replaced), destroy. Every point records the `up` time, the boot
times and CPU-seconds per boot, QEMU's RSS per guest and the host's memory in use; the 27-VM runs
check that every web served within 5% of the mean. Written to results/measurements/scale.json,
which `./labctl report` draws (points of earlier runs are kept: a run adds its own). Not part of
`.ci/run` (deselected by default in pyproject.toml).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from hypervisor import libvirt, paths
from tests.conftest import replaced_with, stack_outputs
from tests.stacks import lab_stack
from virt.virsh import Virsh

pytestmark = [pytest.mark.lab, pytest.mark.scale]
STACK = "scale"
SEED25 = {
    k.removeprefix("l2dsr:"): v
    for k, v in yaml.safe_load((paths.PROJECT_DIR / "Pulumi.seed25.yaml").read_text())["config"].items()
}
# The curve's points before the 27-VM lab; L2DSR_SCALE_CURVE=2,7 chooses others ("" for none).
CURVE = tuple(int(n) for n in os.environ.get("L2DSR_SCALE_CURVE", "2,7,13").split(",") if n.strip())
SPREAD = 0.05  # every web within 5% of the mean number of requests


def host_memory_used_mib() -> int:
    info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return (int(info["MemTotal"].split()[0]) - int(info["MemAvailable"].split()[0])) // 1024


def qemu_rss_mib(prefix: str) -> list[float]:
    ps = subprocess.run(["ps", "-eo", "rss=,args="], capture_output=True, text=True).stdout
    return [int(line.split()[0]) / 1024 for line in ps.splitlines() if f"guest={prefix}" in line]


def up(cli, label: str) -> dict:
    start = time.monotonic()
    cli("up", "--yes", "--skip-preview", timeout=3 * 3600)
    up_s = round(time.monotonic() - start, 1)
    out = stack_outputs(cli)
    boots = out["boot"]
    seconds = [b["seconds"] for b in boots.values()]
    cpu = [b["cpuSeconds"] for b in boots.values() if b["cpuSeconds"]]
    rss = qemu_rss_mib(f"l2dsr-{STACK}-")
    point = {
        "label": label,
        "mode": out["mode"],
        "vms": len(boots),
        "webs": len([v for v in out["vms"] if v["role"] == "web"]),
        "up_s": up_s,
        "boot_s_max": max(seconds),
        "boot_s_median": statistics.median(seconds),
        "boot_cpu_s_median": statistics.median(cpu) if cpu else None,
        "boot_cpu_s_max": max(cpu) if cpu else None,
        "waited_s_max": max(b["waitedSeconds"] for b in boots.values()),
        "qemu_rss_mib_per_guest": round(statistics.mean(rss), 1) if rss else None,
        "host_memory_used_mib": host_memory_used_mib(),
        "memory_available_mib_min": min(b["memoryAvailableMiB"] for b in boots.values()),
        "requests_per_second": [r["requestsPerSecond"] for r in out["summary"]],
        "requests_per_web": out["requestsPerWeb"],
    }
    print(f"\nscale point: {json.dumps({k: v for k, v in point.items() if k != 'requests_per_web'})}", flush=True)
    return point


def check_even(point: dict) -> None:
    served = point["requests_per_web"]
    assert len(served) == point["webs"], served
    mean = statistics.mean(served.values())
    off = {w: n for w, n in served.items() if abs(n - mean) > SPREAD * mean}
    assert not off, f"webs outside {SPREAD:.0%} of the mean {mean:.0f}: {off}"


def test_scaling_curve_then_the_seeds_27_vm_lab(tmp_path):
    virsh = Virsh(libvirt.URI)
    points: list[dict] = []
    phases: dict[str, float] = {}
    with lab_stack(tmp_path, STACK, **SEED25) as cli:
        try:
            for webs in CURVE:
                cli("config", "set", "l2dsr:webCount", str(webs))
                points.append(up(cli, f"webCount {webs}"))
                start = time.monotonic()
                cli("destroy", "--yes", "--skip-preview", timeout=1800)
                points[-1]["destroy_s"] = round(time.monotonic() - start, 1)

            cli("config", "set", "l2dsr:webCount", "25")
            proxy = up(cli, "webCount 25, proxy")
            points.append(proxy)
            assert proxy["vms"] == 27 and proxy["webs"] == 25
            check_even(proxy)

            cli("config", "set", "l2dsr:mode", "dsr")
            plan = json.loads(cli("preview", "--json").stdout)
            replaced = sorted(
                s["urn"].split("::")[-1] for s in plan["steps"] if s["op"] in ("replace", "create-replacement")
            )
            assert replaced == replaced_with("lb-vm"), replaced
            dsr = up(cli, "webCount 25, switch to dsr")
            points.append(dsr)
            check_even(dsr)
            phases["switch_over_full_up"] = round(dsr["up_s"] / proxy["up_s"], 2)
        finally:
            start = time.monotonic()
            cli("destroy", "--yes", "--skip-preview", timeout=1800)
            phases["destroy_27_s"] = round(time.monotonic() - start, 1)
            cli("stack", "rm", "--yes")
            out_dir = paths.PROJECT_DIR / "results" / "measurements"
            out_dir.mkdir(parents=True, exist_ok=True)
            path = out_dir / "scale.json"
            earlier = json.loads(path.read_text()) if path.exists() else {"points": [], "phases": {}}
            labels = {p["label"] for p in points}
            kept = [p for p in earlier["points"] if p["label"] not in labels]
            path.write_text(json.dumps({"points": kept + points, "phases": {**earlier["phases"], **phases}}, indent=1))
            print(f"\nscale phases: {phases}")
    assert [d for d in virsh.run("list", "--all", "--name").split() if d.startswith(f"l2dsr-{STACK}-")] == []
