"""The load-balancer mode contract (lbmodes/): every mode meets it, and no other layer names a mode."""

from __future__ import annotations

import ast
import re

import pytest

import lbmodes
from guest import render
from lab.addressing import plan
from lab.files import Retune, RoleSetup
from tests.conftest import lab_of, lab_stack_values
from tests.program import PROJECT_DIR


@pytest.mark.parametrize("name", lbmodes.MODES)
def test_every_mode_meets_the_contract(name):
    spec, mode = lab_of({**lab_stack_values(), "mode": name})
    assert mode is lbmodes.MODES[name]
    p = plan(spec)
    lb, web = mode.lb(spec, p), mode.web(spec, p, p.webs[0])
    assert isinstance(lb, RoleSetup) and isinstance(web, RoleSetup)
    assert lb.units, "the LB of every mode runs something, under systemd"
    assert mode.shares.low < mode.shares.high and mode.shares.expected and mode.shares.otherwise
    what, mib = mode.lb_memory(spec)
    bigger, _ = lab_of({**lab_stack_values(), "mode": name, "benchConcurrency": 4000, "benchRequests": 8000})
    assert mib > 0 and mode.lb_memory(bigger)[1] >= mib, what  # more connections never need less
    steps = mode.lb_steps(spec)
    # a mode that can change its threads steps through l2dsr:benchThreads; one that cannot, one row
    stepped = mode.lb_steps(lab_of({**lab_stack_values(), "mode": name, "benchThreads": "[1, 2]"})[0])
    assert stepped == ((1, 2) if mode.tunes_threads else steps) and steps == (mode.lb_threads(spec),)
    # The declared flag (what the report reads without a spec) agrees with what the mode does.
    assert mode.tunes_threads == (mode.retune(spec, p, mode.lb_threads(spec)) is not None)
    for threads in {*steps, mode.lb_threads(spec)}:
        change = mode.retune(spec, p, threads)
        # A mode that steps through several thread counts must be able to change them.
        assert change is not None or set(steps) == {mode.lb_threads(spec)}
        if change is not None:
            assert isinstance(change, Retune) and change.expect == str(threads)
            # The retune writes the same file the LB was deployed with (one writer): only its threads differ.
            deployed = {f.path: f.content for f in lb.files}
            for f in change.files:
                assert f.path in deployed
                if threads == mode.lb_threads(spec):
                    assert f.content == deployed[f.path]


def test_modes_are_found_by_their_modules():
    """Every module of lbmodes/ that defines MODE is a mode named after it; the one baseline sorts first."""
    with_mode = {p.stem for p in (PROJECT_DIR / "lbmodes").glob("*.py") if re.search(r"^MODE = ", p.read_text(), re.M)}
    assert with_mode == set(lbmodes.MODES) and len(with_mode) >= 4
    assert {m.__class__.__module__ for m in lbmodes.MODES.values()} == {f"lbmodes.{n}" for n in lbmodes.MODES}
    assert [m for m in lbmodes.MODES.values() if m.baseline] == [lbmodes.BASELINE]
    assert next(iter(lbmodes.MODES)) == lbmodes.BASELINE.name == "proxy"


def test_responses_bypass_the_lb_exactly_in_the_dsr_modes():
    bypass = {name for name, m in lbmodes.MODES.items() if m.shares.high < 0.5}
    assert bypass == {"dsr", "l3dsr"}


MODE_NAME = re.compile("^(" + "|".join(map(re.escape, lbmodes.MODES)) + ")$")


def test_no_layer_outside_lbmodes_compares_a_mode_name():
    """Every other layer asks the mode (containerlab's node contract); a new mode touches no other layer."""
    found = []
    for path in PROJECT_DIR.rglob("*.py"):
        rel = path.relative_to(PROJECT_DIR)
        if rel.parts[0] in ("lbmodes", "tests", ".venv", ".state") or "site-packages" in rel.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and MODE_NAME.match(node.value):
                found.append(f"{rel}:{node.lineno}: {node.value!r}")
    assert not found, found


def test_the_webs_are_the_same_under_proxy_and_dsr_and_differ_where_the_path_does():
    def web(mode: str) -> str:
        spec, mode_ = lab_of({**lab_stack_values(), "mode": mode})
        p = plan(spec)
        return render.user_data(spec, mode_, p, p.webs[0], "ssh-ed25519 AAAA test")

    assert web("proxy") == web("dsr")  # a switch between them replaces only the LB
    assert len({web("dsr"), web("l3dsr"), web("nat")}) == 3
