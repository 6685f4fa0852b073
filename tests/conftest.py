"""What the tests share: the lab stack's values, a spec and its mode from values, the golden key,
a host that fits anything, and a stack's outputs through the CLI."""

from __future__ import annotations

import json
from typing import Any

import yaml

from lab.hostfit import HostFacts
from lab.spec import LabSpec
from lbmodes import Mode, load_lab
from runtime.hostfacts import PROJECT_DIR

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGolden l2dsr-test"  # the SSH key golden renders carry
BIG_HOST = HostFacts(cpus=64, memory_mib=256 * 1024)  # the seed's lab fits


def lab_stack_values() -> dict[str, Any]:
    return yaml.safe_load((PROJECT_DIR / "Pulumi.lab.yaml").read_text())["config"]


def spec_of(values: dict[str, Any] | None = None) -> LabSpec:
    return load_lab(values)[0]


def lab_of(values: dict[str, Any] | None = None) -> tuple[LabSpec, Mode]:
    return load_lab(values)


VM_PARTS = ("disk", "domain", "ready", "seed", "state")  # a Vm component's resources (components/vm.py)


def replaced_with(*vms: str) -> list[str]:
    """What replacing these VMs (by resource prefix: "lb-vm", "web-web01") plans, with the benchmark, sorted."""
    return sorted(["bench-run", *(f"{vm}-{part}" for vm in vms for part in VM_PARTS)])


def stack_outputs(cli) -> dict:
    """Every output of the test's stack (secrets shown), as the CLI prints them."""
    return json.loads(cli("stack", "output", "--json", "--show-secrets").stdout)
