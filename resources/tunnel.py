"""One host's end of the lab's segment across hosts (virt/tunnel.py), made, read and removed on that
host (runtime/hostshell.py): here when it is this machine, over SSH when it is another.

Like the domains and networks, it is marked as the stack's (the interface's alias carries the
stack's owner token): an interface of the same name that is not this stack's is refused at preview
and never removed. Any difference on the host (gone, detached from the bridge, down, a flood entry
missing) is drift, shown at preview and made again by `up`.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, ReadResult

import runtime
from resources.base import Declared, ReplaceOnChange, drift_note, known, read_props
from runtime.hostshell import HostError, HostRef
from virt import ownership
from virt.tunnel import TunnelEnd, TunnelState, differences, parse_state


@dataclass(frozen=True)
class TunnelArgs:
    host: HostRef
    name: str
    vni: int
    local: str
    peers: tuple[str, ...]
    bridge: str
    owner: pulumi.Input[str]
    network_run: pulumi.Input[str]  # the bridge's network made anew: its ports are gone, so is this


@dataclass(frozen=True)
class TunnelOutputs:
    made: str  # a token per creation


def end_of(args: TunnelArgs) -> TunnelEnd:
    return TunnelEnd(args.name, args.vni, args.local, args.peers, args.bridge, f"l2dsr:{args.owner}")


def as_root(host: HostRef, command: str) -> str:
    return command if not host.remote or host.user == "root" else f"sudo -n sh -c {shlex.quote(command)}"


class TunnelProvider(ReplaceOnChange):
    delete_first = True  # one interface name per host

    def state(self, args: TunnelArgs) -> TunnelState:
        try:
            return parse_state(args.host.run(end_of(args).read_command(), timeout=60).stdout)
        except HostError as e:
            raise runtime.LabFailure(f"VXLAN interface {args.name}: cannot read it on {e}") from None

    def foreign(self, args: TunnelArgs, marker: str) -> str:
        return (
            f"{args.host.where()}: interface {args.name} exists and is not this stack's (alias {marker!r}); this "
            f"stack leaves it alone: destroy the stack that made it, or remove it (ip link del {args.name})"
        )

    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        failures: list[CheckFailure] = []
        if known(news.get("owner")):
            args = read_props(TunnelArgs, news)
            try:
                state = self.state(args)
            except runtime.LabFailure as e:
                failures.append(CheckFailure("host", str(e)))
            else:
                if state.exists and state.marker != end_of(args).marker:
                    failures.append(CheckFailure("name", self.foreign(args, state.marker)))
        return CheckResult(news, failures)

    def create(self, props: dict[str, Any]) -> CreateResult:
        args = read_props(TunnelArgs, props)
        end, state = end_of(args), self.state(args)
        if state.exists:
            if state.marker != end.marker:
                raise runtime.LabFailure(self.foreign(args, state.marker))
            runtime.log(f"{args.host.where()}: removing this stack's leftover {args.name} before making it")
            args.host.run(as_root(args.host, end.delete_command()))
        try:
            args.host.run(as_root(args.host, " && ".join(end.create_commands())), timeout=60)
        except HostError as e:
            raise runtime.LabFailure(f"the lab's VXLAN tunnel on {e}") from None
        return CreateResult(id_=f"{args.host.name}/{args.name}", outs={**props, "made": ownership.generation()})

    def drift(self, olds: dict[str, Any]) -> list[str]:
        args = read_props(TunnelArgs, olds)
        found = differences(end_of(args), self.state(args))
        if found:
            drift_note(f"{args.host.where()}: " + "; ".join(found) + ": it will be made again")
            return ["made"]
        return []

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        args = read_props(TunnelArgs, props)
        state = self.state(args)
        if not state.exists:
            return
        if state.marker != end_of(args).marker:
            runtime.log(
                f"{args.host.where()}: {args.name} is not this stack's now (alias {state.marker!r}): left alone"
            )
            return
        args.host.run(as_root(args.host, end_of(args).delete_command()))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        args = read_props(TunnelArgs, props)
        state = self.state(args)
        if not state.exists or state.marker != end_of(args).marker:
            return ReadResult("", {})
        return ReadResult(id_, props)


class Tunnel(Declared, module="l2dsr", name="Tunnel"):
    Args = TunnelArgs
    Outputs = TunnelOutputs
    provider = TunnelProvider
    delete_before_replace = True  # one interface name per host

    made: pulumi.Output[str]
