"""Load-balancer modes: one module each, behind one contract (lbmodes/base.py).

A mode says what the LB and the webs need (files, kernel modules, addressing, services, packages),
which share of the response bytes may cross the LB (the benchmark's proof of the mode), what the
LB's memory estimate is, and what the benchmark may change between its steps (HAProxy's threads).
No other layer compares a mode's name: it asks the mode. A mode is found by its module: a module in
this package that defines `MODE` is a mode, so adding one is adding a module (and its templates
under cloudinit/<mode>/).
"""

from __future__ import annotations

import importlib
import pkgutil

from lbmodes.base import Mode, ShareRule

__all__ = ["MODES", "Mode", "ShareRule", "get", "names"]


def _discover() -> dict[str, Mode]:
    found = []
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        mode = getattr(module, "MODE", None)
        if isinstance(mode, Mode):
            found.append(mode)
    return {m.name: m for m in sorted(found, key=lambda m: (m.order, m.name))}


MODES: dict[str, Mode] = _discover()


def names() -> tuple[str, ...]:
    return tuple(MODES)


def get(name: str) -> Mode:
    """The mode called `name` (already validated by lab/config.py: an unknown name is a KeyError)."""
    return MODES[name]
