"""How much memory each role's VM needs for its configuration: checked at preview, before anything exists.

A VM below its estimate is refused (lab/config.py), naming the key and the minimum: a guest that
runs out of memory hangs in cloud-init or has its server killed mid-benchmark, and either shows up
far from its cause. The figures were measured on the lab's own guests (Debian 12, kernel 6.1,
1 vCPU, software emulation); the README's "Memory" section lists them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lab.config import LabSpec

NGINX_CONF = Path(__file__).resolve().parent.parent / "cloudinit" / "web" / "nginx.conf"

# What the guest kernel keeps for itself (MemTotal is this much below the domain's memory), and what
# the OS takes with cloud-init running at its peak (first boot: Python, SSH key generation, systemd).
KERNEL_RESERVED_MIB = 56
OS_AT_BOOT_MIB = 150
# nginx allocates every worker's connection and event arrays up front: 85 MiB RSS per worker with
# the seed's worker_connections 200000 (about 445 bytes per connection), plus the worker itself.
NGINX_BYTES_PER_CONNECTION = 445
NGINX_WORKER_MIB = 4
# HAProxy 2.6, idle, with the seed's maxconn and ulimit-n: 36 MiB (measured); per thread a little
# more. Per connection (not measured at the seed's scale): session and two connections hold a few
# KiB, and a 16 KiB buffer (tune.bufsize) is taken only while data waits; assumed 8 KiB on average.
HAPROXY_BASE_MIB = 36
HAPROXY_THREAD_MIB = 2
HAPROXY_BYTES_PER_CONNECTION = 8192
# IPVS: a connection entry per request in flight and in TIME_WAIT, a few hundred bytes each.
IPVS_BASE_MIB = 4
IPVS_BYTES_PER_CONNECTION = 512
# ab and wrk: the tool, and a buffer and state per connection.
LOAD_TOOL_BASE_MIB = 8
LOAD_TOOL_BYTES_PER_CONNECTION = 16384


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


def _mib(n_bytes: float) -> int:
    return int(-(-n_bytes // 2**20))  # rounded up


def estimate(role: str, spec: LabSpec) -> Estimate:
    os_parts = [("kernel", KERNEL_RESERVED_MIB), ("OS at boot", OS_AT_BOOT_MIB)]
    per_client = -(-max(spec.bench_concurrency or (1,)) // max(1, spec.client_count))
    if role == "web":
        workers, connections = nginx_workers()
        work = [
            (
                f"nginx {workers} workers x {connections} connections",
                workers * (NGINX_WORKER_MIB + _mib(connections * NGINX_BYTES_PER_CONNECTION)),
            )
        ]
    elif role == "lb":
        import lbmodes  # the mode says what its LB runs (lbmodes/ builds on this module)

        work = [lbmodes.get(spec.mode).lb_memory(spec)]
    else:
        work = [
            (
                f"{spec.bench_tool} {per_client} connections",
                LOAD_TOOL_BASE_MIB + _mib(per_client * LOAD_TOOL_BYTES_PER_CONNECTION),
            )
        ]
    return Estimate(role, (*os_parts, *work))


def haproxy_mib(threads: int, connections: int) -> int:
    return HAPROXY_BASE_MIB + threads * HAPROXY_THREAD_MIB + _mib(connections * HAPROXY_BYTES_PER_CONNECTION)


def ipvs_mib(connections: int) -> int:
    """An entry per connection in flight and several more in TIME_WAIT (4 per connection, assumed)."""
    return IPVS_BASE_MIB + _mib(4 * connections * IPVS_BYTES_PER_CONNECTION)


def memory_problems(spec: LabSpec, project: str = "l2dsr") -> list[str]:
    import lbmodes

    problems = []
    # The LB's estimate is its mode's: none for a mode that does not exist (refused on its own).
    for role in ("client", "lb", "web") if spec.mode in lbmodes.MODES else ("client", "web"):
        est = estimate(role, spec)
        have = spec.memory_mib[role]
        if have < est.mib:
            problems.append(
                f"{project}:{role}MemoryMiB: {have} MiB is below what a {role} VM needs for this configuration "
                f"({est.mib} MiB: {est.explain()}); set {project}:{role}MemoryMiB to {est.mib} or more"
            )
    return problems
