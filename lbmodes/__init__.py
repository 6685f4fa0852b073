"""Load-balancer modes: one module each, behind one contract (lbmodes/base.py).

A mode says what the LB and the webs need (files, kernel modules, addressing, services, packages),
which share of the response bytes may cross the LB (the benchmark's proof of the mode), what the
LB's memory estimate is, and what the benchmark may change between its steps (HAProxy's threads).
No other layer compares a mode's name: it asks the mode. A mode is found by its module: a module in
this package that defines `MODE` is a mode, so adding one is adding a module (and its templates
under cloudinit/<mode>/).

`load_lab` is where a configuration becomes a lab: the spec read (lab/config.py), the mode's and the
load tool's names resolved once into their objects (loadtools/), and the checks that need them
(https, the tool's limits and packages, the LB's and the clients' memory) added, every problem
raised at once. Everything above is handed the mode object, never its name.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from typing import Any

from lab.config import ESTIMATE_KEYS, read_spec, rule_problems
from lab.memory import memory_problems
from lab.spec import PROJECT, ConfigError, LabSpec, Problem
from lbmodes.base import Mode, ShareRule
from loadtools import CLOSED_LOOP, LoadTool

__all__ = ["BASELINE", "MODES", "Mode", "ShareRule", "load_lab", "tool_problems"]


def _discover() -> dict[str, Mode]:
    found = []
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        mode = getattr(module, "MODE", None)
        if isinstance(mode, Mode):
            found.append(mode)
    return {m.name: m for m in sorted(found, key=lambda m: (m.order, m.name))}


MODES: dict[str, Mode] = _discover()
BASELINE: Mode = next(m for m in MODES.values() if m.baseline)


def load_lab(
    values: Mapping[str, Any] | None = None, schema: Mapping[str, Mapping[str, Any]] | None = None
) -> tuple[LabSpec, Mode]:
    """The spec and its mode, or ConfigError with every problem (each naming the key and the fix)."""
    spec, problems = read_spec(values, schema)
    mode = MODES.get(spec.mode)
    if mode is None:
        problems += rule_problems({"mode": spec.mode}, {"mode": {"choices": tuple(MODES)}})
    else:
        problems.extend(_mode_problems(spec, mode))
    tool = CLOSED_LOOP.get(spec.bench_tool)
    if tool is None:
        problems += rule_problems({"benchTool": spec.bench_tool}, {"benchTool": {"choices": tuple(CLOSED_LOOP)}})
    else:
        problems.extend(tool_problems(spec, tool))
    # Estimated only from valid inputs (1000 threads is one problem, not two); the LB's needs its
    # mode, the clients' their tool.
    if not ESTIMATE_KEYS & {p.key for p in problems}:
        problems.extend(
            memory_problems(
                spec,
                mode.lb_memory(spec) if mode else None,
                tool.client_memory(spec.per_client_concurrency) if tool else None,
            )
        )
    if problems or mode is None:  # an unknown mode is a problem
        raise ConfigError(problems)
    return spec, mode


def tool_problems(spec: LabSpec, tool: LoadTool) -> list[Problem]:
    """What the chosen load tool cannot do with the other settings (the tool says what it can)."""
    problems = []
    if not spec.image_is_builtin and spec.image_family not in tool.packages:
        have = [t.name for t in CLOSED_LOOP.values() if spec.image_family in t.packages]
        problems.append(
            Problem(
                "benchTool",
                f"{tool.name} has no package for imageFamily {spec.image_family} (it has one for "
                f"{', '.join(tool.packages)}), so its clients could not run it; use {PROJECT}:benchTool "
                f"{' or '.join(have)}, or an image of family {' or '.join(tool.packages)}",
            )
        )
    limit = tool.max_connections_per_client
    if limit and spec.per_client_concurrency > limit:
        problems.append(
            Problem(
                "benchConcurrency",
                f"{spec.per_client_concurrency} connections per client is above {tool.name}'s limit of "
                f"{limit}; add clients ({PROJECT}:clientCount) or lower the concurrency",
            )
        )
    return problems


def _mode_problems(spec: LabSpec, mode: Mode) -> list[Problem]:
    """What the chosen mode cannot do with the other settings (the mode says what it can)."""
    if spec.bench_scheme != "https":
        return []
    if not mode.terminates_tls:
        tls = " or ".join(m.name for m in MODES.values() if m.terminates_tls)
        return [
            Problem(
                "benchScheme",
                f"https needs TLS terminated on the LB, and mode {mode.name} does not (it passes TCP through to "
                f"the webs, which serve http); use {PROJECT}:mode {tls} for https, or set {PROJECT}:benchScheme "
                "to http",
            )
        ]
    if not spec.https:
        return [Problem("benchScheme", f"https, but the LB has no HTTPS frontend; set {PROJECT}:https to true")]
    return []
