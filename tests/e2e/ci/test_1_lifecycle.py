"""CI's lab, its lifecycle as a user meets it: the first `up` under proxy killed (kill -9) as its first
volume is made and again while the guests boot, then brought up by `./labctl up` alone; the state
holds the key only encrypted; a second stack with the same subnets and a second checkout with the same
stack name are refused without touching the lab; a web removed and another stopped by hand are seen
by preview and restored by up; `--replace` of a web's domain leaves a working lab."""

from __future__ import annotations

import json

import pytest

from tests.conftest import stack_outputs
from tests.e2e.crash import crash_during_the_boots_then_up
from tests.e2e.lab import (
    MATRIX,
    OWN_ADDRESSES,
    SMALL_MATRIX,
    STACK,
    Run,
    check_guests,
    check_results,
    domains,
    last_changes,
    replaced_in_plan,
    set_matrix,
    urn_of,
)
from tests.stacks import lab_stack, project_copy

pytestmark = pytest.mark.lab
after_the_first_up = pytest.mark.needs("test_first_up_killed_twice_then_recovered")


def test_first_up_killed_twice_then_recovered(run: Run) -> None:
    with run.timed("up_proxy"):
        crash_during_the_boots_then_up(run.cli, run.virsh, run.times, run.seen)
    run.results["proxy"] = stack_outputs(run.cli)
    check_results(run.results["proxy"], "proxy")
    run.memory["proxy"] = check_guests(run.cli, "proxy")


@after_the_first_up
def test_the_state_holds_the_key_only_encrypted(run: Run) -> None:
    """The key, each readiness wait and the benchmark's connection hold it: the real state, as the engine wrote it."""
    state = run.cli("stack", "export").stdout
    assert "PRIVATE KEY" not in state, "the state holds the private key in plain text"
    assert state.count("ciphertext") >= 1 + 4 + 1, "the key's holders are not all secret"


@after_the_first_up
def test_a_stack_with_the_same_subnets_is_refused(run: Run, tmp_path) -> None:
    with lab_stack(tmp_path, f"{STACK}-clash", **OWN_ADDRESSES) as other:
        clash = other("preview", check=False)
        other("stack", "rm", "--yes")
    assert clash.returncode != 0 and f"libvirt network l2dsr-{STACK} already holds" in clash.stdout + clash.stderr


@after_the_first_up
def test_a_second_checkout_with_the_same_stack_is_refused(run: Run, tmp_path) -> None:
    """Its own state, so none of these objects are its own: refused before it creates anything on the
    host (only its identity and key, in its own state), not one of the first checkout's VMs touched."""
    before = domains(run.virsh)
    assert all(d is not None and d[1] for d in before.values()), before
    second = project_copy(tmp_path / "second-checkout")
    with lab_stack(tmp_path / "second-state", STACK, project_dir=second, **OWN_ADDRESSES, **MATRIX) as other:
        refused = other("up", "--yes", "--skip-preview", check=False)
        made = json.loads(other("stack", "export").stdout)["deployment"].get("resources") or []
        other("destroy", "--yes", "--skip-preview", timeout=1200)
        other("stack", "rm", "--yes")
    assert sorted(r["type"].split(":")[-1] for r in made if r["type"].startswith("pulumi-python:dynamic/")) in (
        ["SshKey", "StackIdentity"],
        ["StackIdentity"],
    ), [r["urn"] for r in made]
    said = refused.stdout + refused.stderr
    run.seen["second_checkout_up"] = [line for line in said.splitlines() if "error" in line or "not this stack" in line]
    assert refused.returncode != 0, said
    assert f"libvirt network l2dsr-{STACK} (UUID" in said and "is not this stack's" in said, said
    assert "Traceback" not in said
    assert domains(run.virsh) == before


@after_the_first_up
def test_webs_removed_and_stopped_by_hand_are_restored(run: Run) -> None:
    cli, virsh = run.cli, run.virsh
    set_matrix(cli, SMALL_MATRIX)
    before = domains(virsh)
    virsh.domain_remove(f"l2dsr-{STACK}-web02")
    virsh.run("destroy", f"l2dsr-{STACK}-web01")
    preview = cli("preview", "--diff")
    run.seen["preview_after_drift"] = [
        line
        for line in (preview.stdout + preview.stderr).splitlines()
        if "will be created again" in line or "+-" in line
    ]
    assert replaced_in_plan(cli) == [
        "bench-run",
        "web-web01-domain",
        "web-web01-ready",
        "web-web01-state",
        "web-web02-domain",
        "web-web02-ready",
        "web-web02-state",
    ]
    run.up("restore_drift")
    changes = last_changes(cli)
    assert changes.get("replace") == 7 and "create" not in changes and "delete" not in changes, changes
    after = domains(virsh)
    assert all(after[vm][1] and after[vm][0] != before[vm][0] for vm in ("web01", "web02")), after
    assert all(after[vm] == before[vm] for vm in ("client01", "lb")), after
    check_results(stack_outputs(cli), "proxy", SMALL_MATRIX)


@after_the_first_up
def test_replace_of_a_web_domain_leaves_a_working_lab(run: Run) -> None:
    cli = run.cli
    set_matrix(cli, SMALL_MATRIX)
    before = domains(run.virsh)["web01"]
    run.up("replace_web_domain", "--replace", urn_of(cli, "web-web01-domain"))
    replaced = domains(run.virsh)["web01"]
    assert replaced is not None and replaced[1] and (before is None or replaced[0] != before[0]), replaced
    assert last_changes(cli).get("replace") == 4  # the domain, its readiness and state, the benchmark
    check_results(stack_outputs(cli), "proxy", SMALL_MATRIX)
    cli("preview", "--expect-no-changes")
