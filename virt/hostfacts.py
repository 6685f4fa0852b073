"""What the lab knows about the machine it runs on, in one small place.

`./labctl setup` (hypervisor/libvirt.py) probes the machine and writes the answer to
/run/l2dsr/host.json: which libvirtd it started (ours in a network namespace, or the system's),
that namespace, and whether KVM can run guests here. Everything that runs later only reads it,
through this module: the Pulumi program (the domain type for `l2dsr:domainType: auto`) and every
SSH to a guest (the lab's addresses exist only inside the namespace). Nothing here starts or
changes anything.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

RUN_DIR = Path("/run/l2dsr")
RECORD = RUN_DIR / "host.json"
DOMAIN_TYPES = ("kvm", "qemu")


@dataclass
class HostRecord:
    """What setup started, so teardown stops exactly that, and what it found."""

    mode: str  # system | sandbox
    namespace: str = ""
    pids: dict[str, int] = field(default_factory=dict)
    created_pool: bool = False
    domain_type: str = ""  # kvm when KVM ran a probe guest here, else qemu (software emulation)


def read_record() -> HostRecord | None:
    if not RECORD.exists():
        return None
    return HostRecord(**json.loads(RECORD.read_text()))


def write_record(rec: HostRecord) -> None:
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    RECORD.write_text(json.dumps(asdict(rec), indent=1))


class DomainTypeUnknown(RuntimeError):
    pass


def resolve_domain_type(configured: str) -> str:
    """The program's answer for l2dsr:domainType: explicit, or what setup's probe found."""
    if configured in DOMAIN_TYPES:
        return configured
    rec = read_record()
    if rec and rec.domain_type:
        return rec.domain_type
    raise DomainTypeUnknown(
        "l2dsr:domainType: auto, but this host has not been probed for KVM yet: run ./labctl setup, "
        "or set l2dsr:domainType to kvm or qemu"
    )


class OutsideLabNamespace(RuntimeError):
    pass


def assert_in_lab_namespace() -> None:
    """Refuse to talk to guests from anywhere but the lab's namespace when the lab runs in one.

    The lab's addresses are private ranges that exist only inside it; from the host's own namespace
    the same addresses lead off this machine, where nothing of ours is and nothing may be sent.
    """
    rec = read_record()
    if not rec or not rec.namespace:
        return
    ours = Path(f"/run/netns/{rec.namespace}")
    if not ours.exists() or os.stat("/proc/self/ns/net").st_ino != ours.stat().st_ino:
        raise OutsideLabNamespace(
            f"the lab's addresses live in network namespace {rec.namespace}, and this process is not in it: "
            f"run it through ./labctl (or `ip netns exec {rec.namespace} ...`)"
        )
