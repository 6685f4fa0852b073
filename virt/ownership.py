"""Which libvirt objects belong to this stack, and which one a resource created.

Domains and networks keep stable names (`l2dsr-<stack>-web01`), so a name alone cannot say whose
an object is: another checkout may use the same stack name on the same host, and during a
replacement the old and the new object share it. Their UUID says it instead:

- its first half is derived from the stack's identity (`owner`: project, stack and a random token
  made once per stack state) and the object's name: "this stack's";
- its second half is random for each creation: "the one this resource created" (kept in state).

A delete removes only the object whose whole UUID the state recorded, so a replacement's new object
is never removed with the old one; a create refuses a same-named object that is not this stack's.
Volumes need no marker: each creation gets a name of its own (`<stem>-<generation>.<ext>`).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass
from xml.etree import ElementTree
from xml.sax.saxutils import escape


def owner_prefix(owner: str, name: str) -> str:
    return hashlib.sha256(f"{owner}\0{name}".encode()).hexdigest()[:16]


def new_uuid(owner: str, name: str) -> str:
    return str(uuidlib.UUID(owner_prefix(owner, name) + secrets.token_hex(8)))


def is_owned(uuid: str, owner: str, name: str) -> bool:
    return uuid.replace("-", "").lower().startswith(owner_prefix(owner, name))


def with_uuid(xml: str, uuid: str) -> str:
    """The document with its <uuid> (after <name>); the rendered XML carries none."""
    if "<uuid>" in xml:
        raise ValueError("the XML already has a <uuid>")
    out, n = re.subn(r"(<name>[^<]*</name>)", rf"\1\n  <uuid>{uuid}</uuid>", xml, count=1)
    if n != 1:
        raise ValueError("the XML has no <name>")
    return out


def generation() -> str:
    return secrets.token_hex(4)


def volume_name(stem: str, ext: str, gen: str) -> str:
    return f"{stem}-{gen}.{ext}"


# ---- the project's marker: whose an object is, readable without any state -------------------------
# Every domain and network the lab creates carries, in its libvirt <metadata>, the stack's identity and
# the Pulumi state that holds it. Clean-ups that have no stack state to go by (`./labctl down --force`,
# `hosts down --force`, the test command's) read it to remove only what is theirs; an object without
# it is the user's, and one of another state is another checkout's stack: both are listed and left.

MARKER_NS = "https://l2dsr-lab.invalid/ownership/1"


@dataclass(frozen=True)
class Marker:
    owner: str  # the stack's identity, <project>/<stack>/<random> (resources/identity.py)
    state: str  # the Pulumi backend holding the stack's state (PULUMI_BACKEND_URL)

    @property
    def stack(self) -> str:
        parts = self.owner.split("/")
        return parts[1] if len(parts) == 3 else ""

    def element(self) -> str:
        return (
            f'<l2dsr:lab xmlns:l2dsr="{MARKER_NS}" owner="{xml_escape(self.owner)}" state="{xml_escape(self.state)}"/>'
        )


def state_url() -> str:
    """The state the running engine writes to: what the marker of an object created now says."""
    return os.environ.get("PULUMI_BACKEND_URL", "")


def with_marker(xml: str, marker: Marker) -> str:
    """The document with the project's marker in its <metadata> (after <uuid>, or <name>)."""
    if "<metadata>" in xml:
        return xml.replace("<metadata>", f"<metadata>\n    {marker.element()}", 1)
    anchor = "</uuid>" if "</uuid>" in xml else "</name>"
    if anchor not in xml:
        raise ValueError("the XML has no <name>")
    return xml.replace(anchor, f"{anchor}\n  <metadata>\n    {marker.element()}\n  </metadata>", 1)


def marker_of(xml: str) -> Marker | None:
    """The project's marker in a domain's or network's XML; None when it has none (not ours)."""
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        return None
    found = root.find(f"metadata/{{{MARKER_NS}}}lab")
    if found is None:
        return None
    return Marker(found.get("owner", ""), found.get("state", ""))


@dataclass(frozen=True)
class Sorted:
    remove: list[str]  # the clean-up's own: removed
    left: list[str]  # listed and left: `name (why)`


def sort_for_cleanup(
    objects: dict[str, Marker | None],
    is_ours: Callable[[Marker], bool],
    gone: Callable[[Marker], bool] = lambda m: False,
) -> Sorted:
    """Which of a host's objects (name -> marker) a clean-up may remove: only those whose marker says
    they are its own, whatever --force says (pure; `gone` says which markers name a state that no
    longer exists, so the listing can say how to remove those)."""
    remove, left = [], []
    for name, marker in sorted(objects.items()):
        if marker is None:
            left.append(f"{name} (no l2dsr marker: not the lab's)")
        elif not is_ours(marker) and gone(marker):
            left.append(
                f"{name} (stack {marker.stack or '?'} of a state that no longer exists here: {marker.state}; "
                "./labctl down --force --orphans removes it)"
            )
        elif not is_ours(marker):
            left.append(f"{name} (stack {marker.stack or '?'} of another state: {marker.state or 'unknown'})")
        else:
            remove.append(name)
    return Sorted(remove, left)


def state_gone(marker: Marker, exists: Callable[[str], bool] = os.path.exists) -> bool:
    """The marker names a local state (file://) whose directory is not on this machine: a checkout
    removed, or a CI run's, killed before its clean-up. No stack can manage its objects again."""
    return marker.state.startswith("file:///") and not exists(marker.state.removeprefix("file://"))


def of_state_or_orphan(*states: str, exists: Callable[[str], bool] = os.path.exists) -> Callable[[Marker], bool]:
    """`of_state`, and also every object whose state no longer exists (`down --force --orphans`)."""
    ours = of_state(*states)
    return lambda m: ours(m) or state_gone(m, exists)


def of_state(*states: str) -> Callable[[Marker], bool]:
    """Ours when the object's state is one of `states`, or lies under one (a directory of test states)."""

    def ours(marker: Marker) -> bool:
        return bool(marker.state) and any(
            marker.state == s or marker.state.startswith(s.rstrip("/") + "/") for s in states if s
        )

    return ours


def xml_escape(value: str) -> str:
    return escape(value, {'"': "&quot;"})
