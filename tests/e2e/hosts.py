"""Across two hosts (simulated: ./labctl hosts up 2), placed as Pulumi.twohost.yaml places them: the
tunnel's counters on each host."""

from __future__ import annotations

import yaml

from hypervisor import paths
from hypervisor.vmssh import host_refs
from tests.e2e.lab import STACK
from virt.tunnel import interface_name

TWO_HOSTS_PLACEMENT = yaml.safe_load((paths.PROJECT_DIR / "Pulumi.twohost.yaml").read_text())["config"][
    "l2dsr:placement"
]
HOSTS_LOG = paths.state_dir() / "logs" / "hosts.log"


def tunnel_bytes(out: dict) -> dict[str, dict[str, int]]:
    """Each host's VXLAN interface counters: what left the host (tx) and arrived (rx) through the tunnel."""
    stats = f"/sys/class/net/{interface_name(STACK)}/statistics"
    found = {}
    for name, host in host_refs(out).items():
        tx, rx = host.run(f"cat {stats}/tx_bytes {stats}/rx_bytes").stdout.split()
        found[name] = {"tx": int(tx), "rx": int(rx)}
    return found


def responses_bytes(out: dict) -> int:
    """The bytes of the files the runs served (a floor under what the replies carried)."""
    return sum(int(r["totalRequests"]) * int(r["fileSizeBytes"]) for r in out["results"])
