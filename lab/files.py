"""The pieces a VM's cloud-config is made of: template filling, files, and what a role sets up.

Pure types (and the templates in cloudinit/ they are filled from): the load-balancer modes
(lbmodes/) build them, guest/render.py turns them into cloud-config, the benchmark applies a
`Retune`. Importing nothing else of the project, so every layer above can use them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

TEMPLATES = Path(__file__).resolve().parent.parent / "cloudinit"  # the real config files, with holes
_HOLE = re.compile(r"\{\{(\w+)\}\}")


def fill(template: str, **values: object) -> str:
    """Fill `{{name}}` holes in cloudinit/<template>; a missing or unused value is a bug, not a blank."""
    text = (TEMPLATES / template).read_text()
    holes = set(_HOLE.findall(text))
    if holes != set(values):
        raise KeyError(f"{template}: holes {sorted(holes)} but values {sorted(values)}")
    return _HOLE.sub(lambda m: str(values[m.group(1)]), text)


@dataclass(frozen=True)
class WriteFile:
    path: str
    content: str
    permissions: str = "0644"

    def as_cloud_config(self) -> dict[str, str]:
        return {"path": self.path, "content": self.content, "permissions": self.permissions}


@dataclass(frozen=True)
class RoleSetup:
    """What one VM needs for its part in a mode, in the order cloud-init applies it.

    modules: kernel modules, loaded before the sysctls are applied (some sysctls name their devices)
    and at every boot (modules-load.d); files: written first; net: lines of the VM's addressing script
    (l2dsr-net, run at every boot: routes, the VIP); commands: run after the files, before the units;
    units: the role's services, started once, last, under systemd; packages: for images without them.
    """

    modules: tuple[str, ...] = ()
    files: tuple[WriteFile, ...] = ()
    net: tuple[str, ...] = ()
    commands: tuple[str, ...] = ()
    units: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()


@dataclass(frozen=True)
class Retune:
    """A change the benchmark makes between its steps (HAProxy's threads): files re-rendered by the
    mode (the one writer of each guest file), a command that checks and applies them, and a command
    whose output lists `expect` once the change has taken effect."""

    files: tuple[WriteFile, ...]
    apply: str
    check: str
    expect: str


@dataclass(frozen=True)
class Check:
    """One fact of a running guest that its role set up: a command that prints it, and what it must
    print (guest/state.py reads them at every preview; a difference is drift, repaired in place)."""

    what: str  # for people: "VIP 192.168.16.100/32 on lo"
    command: str  # prints one line
    expect: str
