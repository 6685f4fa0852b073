"""CI's lab in the seed's two modes: the benchmark over the LB's HTTPS frontend (only the benchmark
reruns); proxy seen on the wire (status, a capture on the LB's tap, the picture); the switch to dsr
(the engine replaces only the LB and the benchmark), proven by its byte counters and inside the
guests; an unchanged up; dsr seen on the wire (the LB rewrites only the destination MAC, web01
replies from the VIP straight to the client); the open-loop tool through dsr from both clients."""

from __future__ import annotations

import pytest

from bench.parse import Placed, combine
from loadtools import OPEN_LOOP, Load, url, vegeta
from runtime import at_once
from runtime.ssh import KeyFile
from tests.conftest import replaced_with, stack_outputs
from tests.e2e.lab import (
    HTTPS_MATRIX,
    LOAD,
    MATRIX,
    NOT_THE_LB,
    SEARCH,
    SMALL_MATRIX,
    Run,
    check_capacity,
    check_guests,
    check_results,
    lab_ssh,
    last_changes,
    private_key,
    replaced_in_plan,
    set_matrix,
    urn_of,
)
from tests.e2e.seeing import seen_on_the_wire

pytestmark = pytest.mark.lab
after_the_first_up = pytest.mark.needs("test_first_up_killed_twice_then_recovered")


@after_the_first_up
def test_https_frontend(run: Run) -> None:
    """The LB already has it (l2dsr:https), so only the benchmark reruns; a smaller matrix, ab with
    keep-alive: every new connection is a TLS handshake, about 35/s under emulation."""
    cli = run.cli
    set_matrix(cli, {**HTTPS_MATRIX, **LOAD["proxy-https"], "benchFault": ""})
    cli("config", "set", "l2dsr:benchScheme", "https")
    assert replaced_in_plan(cli) == ["bench-run"]
    run.up("bench_https")
    run.results["proxy-https"] = stack_outputs(cli)
    check_results(run.results["proxy-https"], "proxy", HTTPS_MATRIX, scheme="https", load="proxy-https")


@after_the_first_up
def test_proxy_seen_on_the_wire(run: Run, tmp_path) -> None:
    cli = run.cli
    set_matrix(cli, {**SMALL_MATRIX, **LOAD["proxy"], "benchFault": ""})
    cli("config", "set", "l2dsr:benchScheme", "http")
    seen_on_the_wire(run, tmp_path, "proxy", hosts=1, replies_bypass=False)


@after_the_first_up
def test_proxy_capacity(run: Run) -> None:
    """A short capacity search under proxy (only the benchmark reruns: the webs' files are its own)."""
    cli = run.cli
    set_matrix(cli, {**SMALL_MATRIX, **LOAD["proxy"], "benchFault": "", **SEARCH})
    cli("config", "set", "l2dsr:benchScheme", "http")
    assert replaced_in_plan(cli) == ["bench-run"]
    run.up("search_proxy")
    out = run.results["proxy-search"] = stack_outputs(cli)
    run.seen["capacity_proxy"] = out["capacityTable"].splitlines()
    check_capacity(out, "proxy")


@after_the_first_up
def test_switch_to_dsr(run: Run) -> None:
    cli = run.cli
    set_matrix(cli, {**MATRIX, **LOAD["dsr"], "benchFault": "", "benchTrigger": "", "benchSearch": False})
    cli("config", "set", "l2dsr:benchScheme", "http")
    cli("config", "set", "l2dsr:mode", "dsr")
    assert replaced_in_plan(cli) == replaced_with("lb-vm")
    run.up("switch_to_dsr")
    history = last_changes(cli)
    assert history.get("replace") == 6 and "create" not in history and "delete" not in history, history
    run.results["dsr"] = stack_outputs(cli)
    check_results(run.results["dsr"], "dsr")
    assert all(r["flags"] == [] for r in run.results["dsr"]["results"]), run.results["dsr"]["resultsTable"]
    run.memory["dsr"] = check_guests(cli, "dsr")


@pytest.mark.needs("test_switch_to_dsr")
def test_unchanged_up_changes_nothing(run: Run) -> None:
    with run.timed("up_unchanged"):
        run.cli("up", "--yes", "--expect-no-changes")


@pytest.mark.needs("test_switch_to_dsr")
def test_dsr_seen_on_the_wire(run: Run, tmp_path) -> None:
    cli = run.cli
    set_matrix(cli, SMALL_MATRIX)
    seen_on_the_wire(run, tmp_path, "dsr", hosts=1, replies_bypass=True)


@pytest.mark.needs("test_switch_to_dsr")
def test_the_open_loop_tool_drives_a_rate_through_dsr(run: Run) -> None:
    """vegeta (the capacity search's tool, built into the image from its Go module) on both clients at
    once, each at a fixed rate for a few seconds through the VIP: every request answered, the clients
    on their schedule, the per-second counts and the merge consistent with what was offered."""
    cli = run.cli
    out = stack_outputs(cli)
    clients = sorted(vm["address"] for vm in out["vms"] if vm["role"] == "client")
    load = Load(url("http", out["vip"]), 50, 0, False, seconds=4, rate=40)
    tool = OPEN_LOOP["vegeta"]
    with KeyFile(private_key(cli)) as key, run.timed("open_loop"):
        ssh = lab_ssh(out, key)
        texts = at_once(lambda address: ssh.run(address, tool.run(load), timeout=120).stdout, clients)
    runs = [tool.parse(text, load, 5120) for text in texts]
    assert [(r.complete_requests, r.failed_requests, r.non_2xx_responses) for r in runs] == [(160, 0, 0)] * 2, texts
    for text in texts:
        assert sum(ok for ok, _ in vegeta.per_second(text)) == 160, text
        assert vegeta.summary(text)["behind_ms"] < vegeta.BEHIND_MS, text
    starts = [vegeta.summary(text)["first_ns"] / 1e9 for text in texts]
    merged = combine(
        [Placed(r, f"client{i}", s, 0.0) for i, (r, s) in enumerate(zip(runs, starts, strict=True))], tool.rank
    )
    assert merged["total_requests"] == 320 and merged["latency_percentiles_ms"]["p99"] > 0, merged
    run.seen["open_loop_dsr"] = [
        f"{merged['requests_per_second']}/s offered 80/s, p99 {merged['latency_percentiles_ms']['p99']} ms"
    ]


@pytest.mark.needs("test_switch_to_dsr", "test_proxy_capacity")
def test_dsr_capacity_is_at_least_proxys_at_the_larger_size(run: Run) -> None:
    """The same search under dsr; the response bytes never cross its LB, so at 128 KiB it carries at
    least what proxy carried, unless the clients bound it first (then said so, and its LB is shown out
    of the response path: under a tenth of proxy's bytes per request, and less busy)."""
    cli = run.cli
    set_matrix(cli, {**SMALL_MATRIX, **LOAD["dsr"], **SEARCH})
    run.up("search_dsr", "--target", urn_of(cli, "bench-run"))
    out = run.results["dsr-search"] = stack_outputs(cli)
    run.seen["capacity_dsr"] = out["capacityTable"].splitlines()
    dsr = check_capacity(out, "dsr")
    points = {(p["mode"], int(p["sizeKib"])): p for p in [*run.results["proxy-search"]["capacity"], *out["capacity"]]}
    big_dsr, big_proxy = points[("dsr", 128)], points[("proxy", 128)]
    if big_dsr["rateRps"] >= big_proxy["rateRps"]:
        run.seen["capacity_at_128k"] = [f"dsr {big_dsr['rateRps']}/s >= proxy {big_proxy['rateRps']}/s"]
    else:
        # Only the clients or the host may hold dsr below proxy (under emulation a 1-vCPU client receiving
        # 128 KiB responses saturates before a dsr LB does, and every VM shares the host's CPUs): then
        # the modes differ where the LB is, which is what the bytes and the CPU say at the rates found.
        assert big_dsr["bound"].startswith(NOT_THE_LB), (big_dsr["bound"], dsr)
        lb = {
            m: max((t for t in points[(m, 128)]["trials"] if t["passed"]), key=lambda t: t["offeredRps"])
            for m in ("dsr", "proxy")
        }
        assert lb["dsr"]["lbBytesPerRequest"] < 0.1 * lb["proxy"]["lbBytesPerRequest"], lb
        assert lb["dsr"]["cpu"]["lb"] < lb["proxy"]["cpu"]["lb"], lb
        run.seen["capacity_at_128k"] = [
            f"dsr {big_dsr['rateRps']}/s bound by {big_dsr['bound']}; proxy {big_proxy['rateRps']}/s bound by "
            f"{big_proxy['bound']}; LB bytes per request {lb['dsr']['lbBytesPerRequest']} vs "
            f"{lb['proxy']['lbBytesPerRequest']}, LB CPU {lb['dsr']['cpu']['lb']} vs {lb['proxy']['cpu']['lb']}"
        ]
