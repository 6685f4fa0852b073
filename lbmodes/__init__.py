"""Load-balancer modes: one module each, behind one contract (lbmodes/base.py).

A mode says what the LB and the webs need (files, kernel modules, addressing, services, packages),
which share of the response bytes may cross the LB (the benchmark's proof of the mode), what the
LB's memory estimate is, and what the benchmark may change between its steps (HAProxy's threads).
No other layer compares a mode's name: it asks the mode. A mode is found by its module: a module in
this package that defines `MODE` is a mode, so adding one is adding a module (and its templates
under cloudinit/<mode>/).

`load_lab` is where a configuration becomes a lab: the spec read (lab/config.py), the mode's name
resolved once into its object, and the checks that need the mode (https, the LB's memory) added,
every problem raised at once. Everything above is handed the mode object, never its name.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from typing import Any

from lab.config import ESTIMATE_KEYS, read_spec
from lab.memory import memory_problems
from lab.spec import PROJECT, ConfigError, LabSpec, Problem
from lbmodes.base import Mode, ShareRule

__all__ = ["BASELINE", "MODES", "Mode", "ShareRule", "load_lab"]


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
        problems.append(Problem("mode", f"{spec.mode!r} is not one of {', '.join(MODES)}; set one of them"))
    else:
        problems.extend(_mode_problems(spec, mode))
    # Estimated only from valid inputs (1000 threads is one problem, not two); the LB's needs its mode.
    if not ESTIMATE_KEYS & {p.key for p in problems}:
        problems.extend(memory_problems(spec, mode.lb_memory(spec) if mode else None))
    if problems or mode is None:  # an unknown mode is a problem
        raise ConfigError(problems)
    return spec, mode


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
