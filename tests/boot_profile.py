"""Where a guest's boot goes, on a deployed stack: kernel, initrd, systemd, each cloud-init stage,
the role's set-up (runcmd), and the CPU each took, read inside the guests after their first boot.

    python3 tests/boot_profile.py [--stack lab] [VM ...]      (default: every VM of the stack)

Run it right after `./labctl up` (it reads what the boot left: systemd-analyze, cloud-init's
records, systemd's per-unit CPU accounting). Prints one Markdown table (docs/boots.md keeps one) and
writes results/measurements/boot-profile-<stack>.json. Not collected by pytest.

The columns: `kernel` and `initrd` are wall time (under emulation one vCPU is busy throughout, so
also CPU); systemd's `userspace` is wall time until the boot's jobs were done; the cloud-init
stages (`local`, `init`, `final`) are cloud-init's own timings, and `final` holds the role's
`runcmd` (scripts_user), shown on its own; `CPU-s` columns are systemd's accounting of the
units (cloud-init-local, cloud-init, cloud-final, and everything else that ran at boot).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

STAGES = {"init-local": "local", "init-network": "init", "modules-final": "final"}
UNITS = ("cloud-init-local.service", "cloud-init.service", "cloud-final.service")
SEP = "@@l2dsr-boot-profile@@"
PROBE = (
    f"systemd-analyze time 2>&1 | head -1; echo {SEP}; "
    f"sudo cloud-init analyze show 2>&1; echo {SEP}; "
    f"systemctl show -p Id -p CPUUsageNSec '*.service' 2>/dev/null; echo {SEP}; "
    "cat /proc/uptime; awk '/^cpu / {print $2+$3+$4+$7+$8+$9}' /proc/stat; getconf CLK_TCK"
)


def seconds(text: str) -> float:
    """systemd-analyze's spans: '1min 2.345s', '812ms', '3.1s'."""
    total = 0.0
    for value, unit in re.findall(r"([\d.]+)(min|ms|s)\b", text):
        total += float(value) * {"min": 60, "s": 1, "ms": 0.001}[unit]
    return round(total, 2)


def parse(out: str) -> dict:
    analyze, cloud, units, proc = (out.split(SEP + "\n") + ["", "", "", ""])[:4]
    row: dict = {}
    for part in analyze.split("=")[0].split("+"):
        m = re.search(r"(.*)\((kernel|initrd|userspace)\)", part.strip())
        if m:
            row[m[2]] = seconds(m[1])
    for stage, name in STAGES.items():
        m = re.search(rf"Finished stage: \({stage}\) ([\d.]+) seconds", cloud)
        if m:
            row[name] = round(float(m[1]), 2)
    m = re.search(r"config-scripts[-_]user ran successfully @[\d.]+s \+([\d.]+)s", cloud)
    if m:
        row["runcmd"] = round(float(m[1]), 2)
    cpu: dict[str, float] = {}
    for block in units.strip().split("\n\n"):
        fields = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if fields.get("CPUUsageNSec", "").isdigit():
            cpu[fields["Id"]] = int(fields["CPUUsageNSec"]) / 1e9
    for unit in UNITS:
        row[f"cpu {unit.split('.')[0]}"] = round(cpu.pop(unit, 0.0), 2)
    row["cpu other units"] = round(sum(cpu.values()), 2)
    lines = proc.split()
    if len(lines) >= 4:
        row["uptime"] = round(float(lines[0]), 1)
        row["cpu busy since boot"] = round(int(lines[2]) / int(lines[3]), 1)
    row["top units"] = ", ".join(f"{u} {s:.1f}" for u, s in sorted(cpu.items(), key=lambda i: -i[1])[:4])
    return row


def probe(stack: str, vm: str) -> dict:
    done = subprocess.run(
        [str(PROJECT / "labctl"), "ssh", vm, PROBE],
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "L2DSR_STACK": stack},
    )
    if done.returncode != 0:
        return {"error": (done.stderr or done.stdout).strip()[-300:]}
    return parse(done.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", default="lab")
    parser.add_argument("vms", nargs="*")
    args = parser.parse_args()
    names = args.vms
    if not names:
        out = subprocess.run(
            [str(PROJECT / "labctl"), "pulumi", "stack", "output", "vms", "--json", "--stack", args.stack],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        names = [v["name"].rsplit("-", 1)[-1] for v in json.loads(out)]
    rows = {vm: probe(args.stack, vm) for vm in names}
    columns = [
        "kernel",
        "initrd",
        "userspace",
        "local",
        "init",
        "final",
        "runcmd",
        "cpu cloud-init-local",
        "cpu cloud-init",
        "cpu cloud-final",
        "cpu other units",
        "cpu busy since boot",
        "uptime",
        "top units",
    ]
    print("| VM | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for vm, row in rows.items():
        if "error" in row:
            print(f"| {vm} | error: {row['error']} |")
            continue
        print(f"| {vm} | " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    target = PROJECT / "results" / "measurements" / f"boot-profile-{args.stack}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
