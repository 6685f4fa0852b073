"""Run the Pulumi program under the SDK's mocks and record what it registers (no engine, no libvirt)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import runpy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi

PROJECT_DIR = Path(__file__).resolve().parent.parent

MOCK_ROW = {
    "mode": "proxy",
    "tool": "ab",
    "lb_threads": 1,
    "concurrency": 20,
    "total_requests": 2000,
    "file_size_bytes": 5120,
    "requests_per_second": 100.0,
    "latency_ms": 10.0,
    "failed_requests": 0,
    "non_2xx_responses": 0,
    "flags": [],
    "lb_bytes": {},
    "client_bytes": {},
    "lb_sent_share": 1.09,
    "lb_response_share": 1.0,
}
MOCK_RESULT = {"runs": [MOCK_ROW], "summary": [MOCK_ROW], "requests_per_web": {}, "raw_dir": "/tmp/results"}


@dataclass
class Registered:
    type: str
    name: str
    parent: str  # the parent's logical name ("" for the stack)
    custom: bool
    inputs: dict[str, Any] = field(default_factory=dict)
    secret_outputs: tuple[str, ...] = ()  # what its options mark secret (additional_secret_outputs)


class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.inputs: dict[str, dict[str, Any]] = {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        inputs = {k: v for k, v in args.inputs.items() if k != "__provider"}
        self.inputs[args.name] = inputs
        outs = dict(args.inputs)
        if "comment" in inputs:  # SshKey
            outs.update(public_key="ssh-ed25519 AAAAmock l2dsr", private_key="mock-private")
        if "stem" in inputs:  # LibvirtVolume, CloudInitDisk: a generation per creation
            generation = hashlib.sha256(repr(sorted(inputs.items())).encode()).hexdigest()[:8]  # new inputs: new one
            outs["name"] = f"{inputs['stem']}-{generation}.{inputs['ext']}"
            outs["path"] = f"/var/lib/libvirt/images/{outs['name']}"
        if "project" in inputs:  # StackIdentity
            outs["owner"] = f"{inputs['project']}/{inputs['stack']}/mocktoken"
        if "xml" in inputs and "host_addresses" not in inputs:  # Domain: a new definition runs anew
            outs["run_token"] = f"run-of-{hashlib.sha256(str(inputs['xml']).encode()).hexdigest()[:8]}"
        if "final_message" in inputs:  # VmReady: a new run boots anew
            outs["boot_id"] = f"boot-of-{inputs['run_token']}"
        if "checks" in inputs:  # GuestState: a new boot is read anew
            outs.update(observed={}, repaired=[], token=f"state-of-{inputs['boot_id']}")
        if "create" in inputs:  # the benchmark's Command
            outs["result"] = dict(MOCK_RESULT)
        return f"{args.name}-id", outs

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}, []


BIG_HOST = (64, 256 * 1024)  # (CPUs, MiB): the seed's lab fits


def run_program(
    config: dict[str, Any],
    stack: str = "lab",
    seen: list[Registered] | None = None,
    host: tuple[int, int] | None = BIG_HOST,
    hosts: dict[str, tuple[int, int] | None] | None = None,
) -> tuple[list[Registered], dict[str, Any]]:
    """Register the whole program once under mocks; returns the resources and the stack's globals.

    `seen` collects the registrations as they happen (useful when the program raises). `host` is
    what libvirt says of each host (`virt.hosts.probe`), None for a libvirt that does not answer;
    `hosts` says it per host name where they differ.
    """
    from unittest import mock

    from lab.hostfit import HostFacts

    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project="l2dsr", stack=stack, preview=False)
    pulumi.runtime.set_all_config(
        {
            f"l2dsr:{k.removeprefix('l2dsr:')}": json.dumps(v) if isinstance(v, (list, dict)) else str(v)
            for k, v in config.items()
        }
    )
    seen = [] if seen is None else seen

    def record(args: pulumi.ResourceTransformationArgs):
        parent = args.opts.parent if args.opts and args.opts.parent else None
        parent_name = parent.pulumi_resource_name if parent is not None else ""
        secret = tuple(args.opts.additional_secret_outputs or ()) if args.opts else ()
        custom = isinstance(args.resource, pulumi.CustomResource)
        seen.append(Registered(args.type_, args.name, parent_name, custom, secret_outputs=secret))
        return None

    pulumi.runtime.register_stack_transformation(record)
    namespace: dict[str, Any] = {}

    @pulumi.runtime.test
    def program():
        namespace.update(runpy.run_path(str(PROJECT_DIR / "__main__.py"), run_name="__main__"))

    def probe(spec, _ref):
        found = (hosts or {}).get(spec.name, host)
        return (HostFacts(*found), "") if found else (None, f"libvirt at {spec.uri} does not answer: (mocked)")

    with mock.patch("virt.hosts.probe", probe):
        program()
    for r in seen:
        r.inputs = mocks.inputs.get(r.name, {})
    asyncio.set_event_loop(asyncio.new_event_loop())
    return seen, namespace
