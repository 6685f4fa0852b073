"""What every dynamic resource of the lab shares: inputs and outputs declared once, replace-on-change.

A resource declares two dataclasses: its inputs (`Args`, what the program passes) and its outputs
(`Outputs`, what its provider adds). From them follow the constructor (`Resource(name, args, opts)`),
the property bag Pulumi stores (`props_of`), and the provider's typed reads (`read_props`): no
property is named three times. The lifecycle (an input change replaces; drift read on every
preview) is `ReplaceOnChange`; domains and networks add ownership (`NamedObjectProvider`).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import types
import typing
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar, Union

import pulumi
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, DiffResult, ReadResult, ResourceProvider
from pulumi.dynamic import Resource as DynamicResource
from pulumi.runtime import rpc

import runtime
from virt import ownership
from virt.virsh import LibvirtUnknown, Virsh, VirshError

PROVIDER_KEY = "__provider"
T = TypeVar("T")


# ---- declared once: dataclass <-> the property bag -------------------------------------------------


def props_of(value: Any) -> Any:
    """A dataclass (nested ones too) as the plain values Pulumi stores; Outputs pass through untouched."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: props_of(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [props_of(v) for v in value]
    if isinstance(value, dict):
        return {str(k): props_of(v) for k, v in value.items()}
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv4Interface, ipaddress.IPv4Network)):
        return str(value)
    return value


def _coerce(kind: Any, value: Any) -> Any:
    """One stored value back into its declared type (numbers come back from the state as floats)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if value is None or kind is Any:
        return value
    if origin in (Union, types.UnionType):
        concrete = [a for a in args if a is not type(None)]
        return _coerce(concrete[0], value) if len(concrete) == 1 else value
    if origin is tuple:
        if not args or (len(args) == 2 and args[1] is Ellipsis):  # tuple[X, ...]
            return tuple(_coerce(args[0] if args else Any, v) for v in value)
        return tuple(_coerce(k, v) for k, v in zip(args, value, strict=True))  # tuple[X, Y]
    if origin is list:
        return [_coerce(args[0], v) for v in value]
    if origin is dict:
        return {k: _coerce(args[1], v) for k, v in value.items()}
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        return read_props(kind, value)
    if kind is int and not isinstance(value, bool):
        return int(value)
    if kind in (ipaddress.IPv4Address, ipaddress.IPv4Interface, ipaddress.IPv4Network):
        return kind(value)
    return value


def field_types(cls: type) -> dict[str, Any]:
    """A declaration's field types, resolved (`pulumi.Input[X]` holds the forward reference `"Output[T]"`)."""
    return typing.get_type_hints(cls, localns={"Output": pulumi.Output, "T": Any})


def read_props(cls: type[T], props: dict[str, Any]) -> T:
    """The dataclass `cls` from a property bag (extra keys, e.g. outputs or `__provider`, ignored)."""
    hints = field_types(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: _coerce(hints[k], props[k]) for k in fields if k in props})


def output_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


class Declared(DynamicResource):
    """A dynamic resource built from its declaration: `Args` in, `Outputs` out, its `provider`."""

    Args: ClassVar[type]
    Outputs: ClassVar[type]
    provider: ClassVar[type[ResourceProvider]]
    secret_outputs: ClassVar[tuple[str, ...]] = ()
    delete_before_replace: ClassVar[bool] = False  # even for `pulumi up --replace`, which does not ask the provider

    def __init__(self, resource_name: str, args: Any, opts: pulumi.ResourceOptions | None = None):
        props = {
            **props_of(args),
            **dict.fromkeys(n for n in output_names(self.Outputs) if n not in output_names(self.Args)),
        }
        extra = pulumi.ResourceOptions(
            additional_secret_outputs=list(self.secret_outputs) or None,
            delete_before_replace=self.delete_before_replace or None,
        )
        super().__init__(
            self.provider(), resource_name, props, pulumi.ResourceOptions.merge(opts or pulumi.ResourceOptions(), extra)
        )


# ---- the lifecycle ---------------------------------------------------------------------------------


class ReplaceOnChange(ResourceProvider):
    """Any input change replaces the resource; with no input change, `drift` may still ask for a
    replacement (the real object is gone or stopped)."""

    serialize_as_secret_always = False
    delete_first = False  # a replacement's old object goes after the new one exists, unless names clash
    not_compared: tuple[str, ...] = ()  # inputs that never cause a replacement

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = sorted(
            k for k in news if k != PROVIDER_KEY and k not in self.not_compared and olds.get(k) != news.get(k)
        )
        if changed:
            return DiffResult(changes=True, replaces=changed, delete_before_replace=self.delete_first)
        drifted = self.drift(olds)
        return DiffResult(changes=bool(drifted), replaces=drifted, delete_before_replace=self.delete_first)

    def drift(self, _olds: dict[str, Any]) -> list[str]:
        """The outputs in which the real object differs from the state (each means: create it again).

        Not an update in place: a preview cannot show an update's new outputs, so what stands on the
        object (readiness, the benchmark) would only be planned during the up itself."""
        return []


def known(value: Any) -> bool:
    return value is not None and value != rpc.UNKNOWN


def looked_up(what: str, lookup: Callable[[], T]) -> T:
    """A lookup's answer, or one readable failure when libvirt cannot say (never "absent")."""
    try:
        return lookup()
    except LibvirtUnknown as e:
        raise runtime.LabFailure(
            f"{what}: cannot tell whether it exists on the host ({e}); nothing was changed"
        ) from None


def drift_note(message: str) -> None:
    runtime.log(message, severity="warning")


def libvirt_failures(uri: str) -> list[CheckFailure]:
    try:
        Virsh(uri).run("version", timeout=30)
    except VirshError as e:
        return [
            CheckFailure("uri", f"libvirt at {uri} does not answer ({e}); run ./labctl setup or fix l2dsr:libvirtUri")
        ]
    return []


class NamedObjectProvider(ReplaceOnChange):
    """A domain or network: one per name on the host, so replaced delete-first, and only ever
    created, adopted or deleted when its UUID says it is this stack's (virt/ownership.py)."""

    kind = ""  # "domain" | "network"
    delete_first = True
    remove_hint = ""  # the virsh commands that remove one by hand ({name})

    def lookup(self, virsh: Virsh, name: str) -> tuple[str, bool] | None:
        raise NotImplementedError

    def make(self, virsh: Virsh, xml: str, name: str) -> None:
        """Define it (and start it, when nothing else does)."""
        raise NotImplementedError

    def remove(self, virsh: Virsh, name: str) -> None:
        raise NotImplementedError

    def _real(self, props: dict[str, Any]) -> tuple[str, bool] | None:
        return looked_up(
            f"libvirt {self.kind} {props['name']}", lambda: self.lookup(Virsh(props["uri"]), props["name"])
        )

    def foreign(self, name: str, uuid: str) -> str:
        return (
            f"libvirt {self.kind} {name} (UUID {uuid}) exists and is not this stack's: another checkout "
            f"with the same stack name, or something made by hand. This stack leaves it alone: destroy the "
            f"stack that made it, or remove it ({self.remove_hint.format(name=name)}), or use another stack name"
        )

    def ownership_failures(self, olds: dict[str, Any], news: dict[str, Any]) -> list[CheckFailure]:
        """At preview, before anything is created: a same-named object that is not ours is refused."""
        if not known(news.get("name")):
            return []
        try:
            real = self.lookup(Virsh(news["uri"]), news["name"])
        except LibvirtUnknown as e:
            return [CheckFailure("name", f"cannot tell whether libvirt {self.kind} {news['name']} exists ({e})")]
        if real is None or real[0] == olds.get("uuid"):
            return []
        owner = news.get("owner")
        if known(owner) and ownership.is_owned(real[0], str(owner), news["name"]):
            return []  # ours: a leftover of an interrupted run, replaced at create
        return [CheckFailure("name", self.foreign(news["name"], real[0]))]

    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        failures = libvirt_failures(news["uri"])
        if not failures:
            failures = self.ownership_failures(olds, news)
        return CheckResult(news, failures)

    def create(self, props: dict[str, Any]) -> CreateResult:
        virsh, name, owner = Virsh(props["uri"]), props["name"], props["owner"]
        real = self._real(props)
        if real is not None:
            if not ownership.is_owned(real[0], owner, name):
                raise runtime.LabFailure(self.foreign(name, real[0]))
            runtime.log(f"{self.kind} {name}: removing this stack's leftover (UUID {real[0]}) before creating it")
            self.remove(virsh, name)
        uuid = ownership.new_uuid(owner, name)
        # The marker is added here, not rendered: it names the state this engine writes to, which is
        # not an input (a moved backend must not replace the lab).
        marker = ownership.Marker(owner, ownership.state_url())
        self.make(virsh, ownership.with_marker(ownership.with_uuid(props["xml"], uuid), marker), name)
        return CreateResult(id_=name, outs={**props, "uuid": uuid, "run_token": ownership.generation()})

    def drift(self, olds: dict[str, Any]) -> list[str]:
        real = self._real(olds)
        if real is None or real[0] != olds.get("uuid") or "run_token" not in olds:
            what = "is missing" if real is None else f"is another object now (UUID {real[0]})"
            drift_note(f"{self.kind} {olds['name']} {what} on the host: it will be created again")
            return ["uuid"]
        if not real[1]:
            drift_note(f"{self.kind} {olds['name']} is not running on the host: it will be created again")
            return ["running"]
        return []

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        name = props["name"]
        real = self._real(props)
        if real is None:
            return
        if "uuid" not in props or real[0] == props["uuid"]:  # no uuid: made before ownership markers
            self.remove(Virsh(props["uri"]), name)
        else:
            runtime.log(
                f"{self.kind} {name}: the one on the host (UUID {real[0]}) is not the one this resource made: left alone"
            )

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        real = self._real(props)
        if real is None or real[0] != props.get("uuid"):
            return ReadResult("", {})  # refresh: gone from the host, so gone from the state
        return ReadResult(id_, {**props, "running": real[1]})


@dataclasses.dataclass(frozen=True)
class ObjectOutputs:
    """What a domain or network resource adds: its UUID (ownership), whether it runs, and a token
    new with every creation (what stands on it attaches, boots or waits anew)."""

    uuid: str
    running: bool
    run_token: str
