"""The deep lab in the IPVS variants: l3dsr and nat need other webs (a tunnel holding the VIP; a route
via the LB), so the LB, the webs and the benchmark are replaced, the clients and the network are not;
nat on an LB with the seed's tuning (2 vCPUs: it carries the replies too); then an unchanged up."""

from __future__ import annotations

import pytest

from tests.conftest import replaced_with, stack_outputs
from tests.e2e.lab import (
    LOAD,
    MATRIX,
    TUNED,
    Run,
    check_guests,
    check_results,
    check_tuning,
    last_changes,
    replaced_in_plan,
    set_matrix,
)

pytestmark = [pytest.mark.lab, pytest.mark.deep]
WEBS_AND_LB = replaced_with("lb-vm", "web-web01", "web-web02")


def switch_to(run: Run, mode: str, tuned: bool = False) -> dict:
    cli = run.cli
    set_matrix(cli, {**MATRIX, **LOAD[mode], "benchTrigger": "", "benchFault": "", **(TUNED if tuned else {})})
    cli("config", "set", "l2dsr:mode", mode)
    cli("config", "set", "l2dsr:ipvsHealthCheck", "none")
    assert replaced_in_plan(cli) == WEBS_AND_LB
    run.up(f"switch_to_{mode}")
    history = last_changes(cli)
    assert history.get("replace") == 16 and "create" not in history and "delete" not in history, history
    out = run.results[mode] = stack_outputs(cli)
    check_results(out, mode)
    run.memory[mode] = check_guests(cli, mode, tuned=tuned)
    return out


@pytest.mark.needs("test_dsr_up")
def test_switch_to_l3dsr(run: Run) -> None:
    switch_to(run, "l3dsr")


@pytest.mark.needs("test_switch_to_l3dsr")
def test_switch_to_nat_on_the_tuned_lb(run: Run) -> None:
    switch_to(run, "nat", tuned=True)
    run.seen["lb_tuning"] = check_tuning(run.cli, run.virsh)


@pytest.mark.needs("test_switch_to_nat_on_the_tuned_lb")
def test_unchanged_up_changes_nothing(run: Run) -> None:
    with run.timed("up_unchanged"):
        run.cli("up", "--yes", "--expect-no-changes")
