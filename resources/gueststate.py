"""A guest's state: what its role set up, read on the running guest at every preview, and put back in
place when it drifted (guest/state.py says what is read and how it is repaired).

A change by hand inside a guest (a VIP removed, an IPVS rule deleted, nginx stopped, a sysctl
changed) shows at `pulumi preview` as a replacement of this resource, with a warning naming each
difference; `pulumi up` then re-applies the role in place (no domain, disk or boot is touched) and
the benchmark, which stands on the states' tokens, runs again. `pulumi refresh` records what the
guest shows. Creating it (after the guest's readiness) checks the fresh guest the same way.
"""

from __future__ import annotations

import base64
import time
import uuid
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, ReadResult

import runtime
from guest import state
from lab.files import Check
from resources.base import Declared, ReplaceOnChange, drift_note, read_props
from runtime.ssh import KeyFile, Ssh, SshError
from runtime.vm import VmRef

SETTLE_S = 30  # after a repair, how long the guest may take to show it (keepalived's first checks)


@dataclass(frozen=True)
class GuestStateArgs:
    guest: VmRef
    checks: tuple[Check, ...]
    repair: str  # the role re-applied in place
    boot_id: pulumi.Input[str]  # the readiness's: a new boot is a new guest to check
    login_user: str
    private_key: pulumi.Input[str]


@dataclass(frozen=True)
class GuestStateOutputs:
    observed: dict[str, str]  # each check's `what` -> what the guest printed
    repaired: tuple[str, ...]  # what differed when it was created, and was put back
    token: str  # new with every creation: the benchmark reruns on it


def read_guest(args: GuestStateArgs) -> dict[str, str]:
    script = base64.b64encode(state.probe_script(args.checks).encode()).decode()
    with KeyFile(str(args.private_key)) as key:
        ssh = Ssh.to(args.login_user, key, [args.guest])
        out = ssh.run(args.guest.address, f"echo {script} | base64 -d | sudo sh", timeout=120, check=False).stdout
    return state.observed(out, args.checks)


def repair(args: GuestStateArgs) -> None:
    with KeyFile(str(args.private_key)) as key:
        Ssh.to(args.login_user, key, [args.guest]).run(args.guest.address, args.repair, timeout=300)


class GuestStateProvider(ReplaceOnChange):
    def create(self, props: dict[str, Any]) -> CreateResult:
        args = read_props(GuestStateArgs, props)
        seen = read_guest(args)
        found = state.differences(args.checks, seen)
        if found:
            runtime.log(f"{args.guest.name}: putting back in place: {state.summary(found)}")
            try:
                repair(args)
            except SshError as e:
                lines = "\n".join(f"    {line}" for line in e.last_lines()) or "    (nothing)"
                raise runtime.LabFailure(
                    f"{args.guest.name}: re-applying its role in place (`{args.repair}`) failed: {e.outcome or e}. "
                    f"Its last lines:\n{lines}"
                ) from None
            deadline = time.monotonic() + SETTLE_S
            while (left := state.differences(args.checks, seen := read_guest(args))) and time.monotonic() < deadline:
                runtime.sleep(2, f"{args.guest.name}: waiting for the repair to show")
            if left:
                raise runtime.LabFailure(
                    f"{args.guest.name}: still not as its role set it up after re-applying it in place "
                    f"({SETTLE_S} s): {state.summary(left)}. Replace the VM: pulumi up --replace <its domain's URN>"
                )
        outs = GuestStateOutputs(seen, tuple(found), uuid.uuid4().hex)
        return CreateResult(
            id_=f"{args.guest.domain}/state",
            outs={**props, "observed": outs.observed, "repaired": list(outs.repaired), "token": outs.token},
        )

    def drift(self, olds: dict[str, Any]) -> list[str]:
        args = read_props(GuestStateArgs, olds)
        try:
            found = state.differences(args.checks, read_guest(args))
        except (SshError, runtime.LabFailure) as e:
            drift_note(f"{args.guest.name}: its state could not be read ({e}); the VM's own resources say why")
            return []
        if found:
            drift_note(f"{args.guest.name} drifted, and will be put back in place: {state.summary(found)}")
            return ["observed"]
        return []

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        args = read_props(GuestStateArgs, props)
        return ReadResult(id_, {**props, "observed": read_guest(args)})

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        pass  # reading left nothing behind


class GuestState(Declared, module="l2dsr", name="GuestState"):
    Args = GuestStateArgs
    Outputs = GuestStateOutputs
    provider = GuestStateProvider
    secret_outputs = ("private_key",)

    observed: pulumi.Output[dict]
    repaired: pulumi.Output[list]
    token: pulumi.Output[str]
