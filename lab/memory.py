"""How much memory each role's VM needs for its configuration: checked at preview, before anything exists.

A VM below its estimate is refused (lbmodes.load_lab), naming the key and the minimum: a guest that
runs out of memory hangs in cloud-init or has its server killed mid-benchmark, and either shows up
far from its cause. The figures were measured on the lab's own guests (Debian 12, kernel 6.1,
1 vCPU, software emulation); docs/memory.md lists them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lab.spec import ROLES, LabSpec, Problem

NGINX_CONF = Path(__file__).resolve().parent.parent / "cloudinit" / "web" / "nginx.conf"

# What the guest kernel keeps for itself (MemTotal is this much below the domain's memory), and what
# the OS takes with cloud-init running at its peak (first boot: Python, SSH key generation, systemd).
KERNEL_RESERVED_MIB = 56
OS_AT_BOOT_MIB = 150
# nginx allocates every worker's connection and event arrays up front: 85 MiB RSS per worker with
# the seed's worker_connections 200000 (about 445 bytes per connection), plus the worker itself.
NGINX_BYTES_PER_CONNECTION = 445
NGINX_WORKER_MIB = 4
# What the LB runs is its mode's to estimate (lbmodes/: HAProxy in proxy.py, IPVS in ipvs.py).
# What a client runs is its load tool's to estimate (loadtools/: LoadTool.client_memory).
# /dummy_file up to this size fits in the page cache the OS's own estimate leaves (the seed's is 5 KiB);
# a larger one needs room beyond the estimate, or the benchmark reads the web's disk.
FILE_IN_OS_CACHE_MIB = 1


@dataclass(frozen=True)
class Estimate:
    role: str
    parts: tuple[tuple[str, int], ...]  # (what, MiB)

    @property
    def mib(self) -> int:
        return sum(m for _, m in self.parts)

    def explain(self) -> str:
        return " + ".join(f"{what} {m}" for what, m in self.parts)


def nginx_workers(conf: str | None = None) -> tuple[int, int]:
    """worker_processes and worker_connections of the web's nginx.conf (the seed's, as rendered)."""
    text = conf if conf is not None else NGINX_CONF.read_text()
    procs = re.search(r"^\s*worker_processes\s+(\d+);", text, re.M)
    conns = re.search(r"^\s*worker_connections\s+(\d+);", text, re.M)
    if not (procs and conns):
        raise ValueError("nginx.conf: worker_processes and worker_connections must be numbers")
    return int(procs.group(1)), int(conns.group(1))


def mib(n_bytes: float) -> int:
    """Bytes as MiB, rounded up."""
    return int(-(-n_bytes // 2**20))


def estimate(
    role: str, spec: LabSpec, lb_work: tuple[str, int] | None, client_work: tuple[str, int] | None = None
) -> Estimate:
    """The role's estimate; `lb_work` and `client_work` are (what, MiB) the LB and a client run
    beyond their OS, from the mode and the load tool."""
    os_parts = [("kernel", KERNEL_RESERVED_MIB), ("OS at boot", OS_AT_BOOT_MIB)]
    if role == "web":
        workers, connections = nginx_workers()
        work = (
            f"nginx {workers} workers x {connections} connections",
            workers * (NGINX_WORKER_MIB + mib(connections * NGINX_BYTES_PER_CONNECTION)),
        )
    elif role == "lb":
        if lb_work is None:
            raise ValueError("the LB's estimate needs its mode's figures")
        work = lb_work
    else:
        if client_work is None:
            raise ValueError("a client's estimate needs its load tool's figures")
        work = client_work
    return Estimate(role, (*os_parts, work))


def memory_problems(
    spec: LabSpec, lb_work: tuple[str, int] | None, client_work: tuple[str, int] | None
) -> list[Problem]:
    """Each role below its estimate; the LB and the clients only with their mode's and tool's figures
    (None: no such mode or tool, refused on its own)."""
    problems = []
    known = {"lb": lb_work is not None, "client": client_work is not None}
    for role in (r for r in ROLES if known.get(r, True)):
        est = estimate(role, spec, lb_work, client_work)
        have = spec.memory_mib[role]
        if have < est.mib:
            problems.append(
                Problem(
                    f"{role}MemoryMiB",
                    f"{have} MiB is below what a {role} VM needs for this configuration ({est.mib} MiB: "
                    f"{est.explain()}); set l2dsr:{role}MemoryMiB to {est.mib} or more",
                )
            )
        elif role == "web" and spec.served_kib > max(have - est.mib, FILE_IN_OS_CACHE_MIB) * 1024:
            # Served from the page cache, or the benchmark measures the web's disk, not the LB.
            problems.append(
                Problem(
                    "benchFileSizesKiB" if spec.bench_search else "benchFileSizeKiB",  # what the webs serve
                    f"{spec.served_kib:,} KiB does not fit in a web's page cache beside nginx ({have - est.mib} "
                    f"MiB free of webMemoryMiB {have} after {est.mib} MiB for {est.explain()}); lower it to "
                    f"{(have - est.mib) * 1024:,} or less, or raise l2dsr:webMemoryMiB to "
                    f"{est.mib + mib(spec.served_kib * 1024)} or more",
                )
            )
    return problems
