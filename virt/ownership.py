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
import re
import secrets
import uuid as uuidlib


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
