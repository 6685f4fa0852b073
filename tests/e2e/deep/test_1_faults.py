"""The deep lab (on demand) under dsr and its faults: faults inside the guests that stop the benchmark
with one readable error each, and flags that fire in a run that provokes them; the fault run under
the seed's static rules (the dead web is never taken out), then under keepalived; three changes by
hand inside the guests, seen by preview and put back by up without touching a domain."""

from __future__ import annotations

import pytest

from guest import render
from runtime.ssh import KeyFile, Ssh
from tests.conftest import replaced_with, stack_outputs
from tests.e2e.faults import FAULT, check_fault, check_keepalived_lb, provoke_failures, provoke_flags
from tests.e2e.lab import (
    SMALL_MATRIX,
    Run,
    check_guests,
    check_results,
    domains,
    last_changes,
    on_lab,
    replaced_in_plan,
    set_matrix,
)

pytestmark = [pytest.mark.lab, pytest.mark.deep]
after_dsr = pytest.mark.needs("test_dsr_up")


def test_dsr_up(run: Run) -> None:
    run.up("dsr")
    out = run.results["dsr"] = stack_outputs(run.cli)
    check_results(out, "dsr", SMALL_MATRIX)
    run.memory["dsr"] = check_guests(run.cli, "dsr")


@after_dsr
def test_faults_inside_the_guests_stop_the_benchmark_readably(run: Run) -> None:
    with run.timed("bench_faults"):
        run.seen["benchmark_faults"] = provoke_failures(run.cli)


@after_dsr
def test_flags_fire_when_provoked(run: Run) -> None:
    with run.timed("bench_flags"):
        run.results["dsr-flags"] = provoke_flags(run.cli)


@after_dsr
def test_a_web_fails_under_static_rules(run: Run) -> None:
    """This up also puts back what the flags' run changed (the LB's scheduler, web01's listen queue)."""
    set_matrix(run.cli, {**SMALL_MATRIX, **FAULT, "benchTrigger": "fault-static"})
    run.up("dsr_fault_static")
    run.seen["fault_dsr_static"] = check_fault(stack_outputs(run.cli), "none (static rules)", 1)


@after_dsr
def test_a_web_fails_under_keepalived(run: Run) -> None:
    cli = run.cli
    set_matrix(cli, {**SMALL_MATRIX, **FAULT})
    cli("config", "set", "l2dsr:ipvsHealthCheck", "keepalived")
    assert replaced_in_plan(cli) == replaced_with("lb-vm")
    run.up("switch_to_keepalived")
    out = run.results["dsr-keepalived"] = stack_outputs(cli)
    run.seen["fault_dsr_keepalived"] = check_fault(out, "keepalived", 1)
    check_keepalived_lb(cli)


@pytest.mark.needs("test_a_web_fails_under_keepalived")
def test_drift_inside_the_guests_is_put_back_in_place(run: Run) -> None:
    """A web's VIP, an IPVS real server, a web's nginx: seen at preview, put back by up in place."""
    cli, virsh = run.cli, run.virsh
    key, vms = on_lab(cli)
    vip = stack_outputs(cli)["vip"]
    before = domains(virsh)
    with KeyFile(key) as key_file:
        ssh = Ssh(render.LOGIN_USER, key_file)
        ssh.run(vms["web01"], f"sudo ip addr del {vip}/32 dev lo")
        ssh.run(vms["lb"], f"sudo ipvsadm -d -t {vip}:80 -r {vms['web02']}:80")
        ssh.run(vms["web02"], "sudo systemctl stop nginx")
    with run.timed("preview_guest_drift"):
        preview = cli("preview", "--diff")
    said = preview.stdout + preview.stderr
    run.seen["preview_guest_drift"] = sorted({line.strip() for line in said.splitlines() if "drifted" in line})
    for expected in (
        f"web01 drifted, and will be put back in place: {vip}/32 on lo: expected '1', found '0'",
        "lb drifted, and will be put back in place: IPVS real servers:",
        "web02 drifted, and will be put back in place: nginx.service running: expected 'active', found 'inactive'",
    ):
        assert expected in said, said[-3000:]
    assert replaced_in_plan(cli) == ["bench-run", "lb-vm-state", "web-web01-state", "web-web02-state"]
    run.up("repair_guest_drift")
    changes = last_changes(cli)
    assert changes.get("replace") == 4 and "create" not in changes and "delete" not in changes, changes
    assert domains(virsh) == before  # no VM rebuilt, none restarted
    out = stack_outputs(cli)
    check_results(out, "dsr", SMALL_MATRIX)  # the benchmark ran again, on the repaired guests
    check_fault(out, "keepalived", 1)
    cli("preview", "--expect-no-changes")
