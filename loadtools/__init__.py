"""The load tools the clients run, one module each (ab.py, wrk.py: closed loop; vegeta.py: open loop)
behind one contract (base.py).

A module that defines `TOOL` is a load tool; adding one is adding a module (and its name to
`benchTool`'s choices in lab/config.py and its package in the image recipe).
"""

from __future__ import annotations

import importlib
import pkgutil

from loadtools.base import Load, LoadTool, clock_start, port, url

__all__ = ["CLOSED_LOOP", "OPEN_LOOP", "TOOLS", "Load", "LoadTool", "clock_start", "port", "url"]


def _discover() -> dict[str, LoadTool]:
    found = {}
    for info in pkgutil.iter_modules(__path__):
        tool = getattr(importlib.import_module(f"{__name__}.{info.name}"), "TOOL", None)
        if isinstance(tool, LoadTool):
            found[tool.name] = tool
    return found


TOOLS: dict[str, LoadTool] = _discover()
# benchTool's choices: the closed-loop tools (the seed's measurement); the open-loop ones run the capacity search
CLOSED_LOOP: dict[str, LoadTool] = {name: t for name, t in TOOLS.items() if not t.open_loop}
OPEN_LOOP: dict[str, LoadTool] = {name: t for name, t in TOOLS.items() if t.open_loop}
