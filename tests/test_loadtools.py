"""The load tools as one family (loadtools/): each declares its facts once, and what reads them (the
configuration's check, the cloud images' packages, the builtin image, the memory and cost estimates)
follows the module, not a list of names. Pure."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pytest

from bench.parse import Placed, combine
from guest import render
from lab.addressing import plan
from lab.config import read_spec
from lab.spec import ConfigError
from lbmodes import MODES, tool_problems
from loadtools import CLOSED_LOOP, OPEN_LOOP, TOOLS, Load, vegeta
from loadtools.base import histogram
from runtime import hostfacts
from tests.conftest import lab_of, spec_of

BUILTIN_FAMILY = "debian"  # the builtin image is Debian's


def test_the_family_is_found_from_its_modules():
    assert {"ab", "wrk"} <= set(TOOLS)
    assert all(name == tool.name for name, tool in TOOLS.items())


@pytest.mark.parametrize("tool", TOOLS.values(), ids=lambda t: t.name)
def test_every_tool_declares_what_the_lab_reads(tool):
    assert tool.packages.get(BUILTIN_FAMILY) or tool.go_module, "the builtin image must carry every tool"
    assert tool.rate_per_vcpu > 0  # the cost estimate's clients
    what, mib = tool.client_memory(1000)
    assert what == f"{tool.name} 1000 connections" and mib > tool.client_memory(10)[1] >= tool.memory_base_mib


@pytest.mark.parametrize("tool", TOOLS.values(), ids=lambda t: t.name)
def test_the_builtin_image_carries_every_tools_package(tool):
    recipe = hostfacts.Recipe.load()
    if tool.go_module:  # built on the host into the image
        assert recipe.go_tools.get(tool.name) == tool.go_module, tool.name
    else:
        assert set(tool.packages[BUILTIN_FAMILY]) <= set(recipe.packages), tool.name


@pytest.mark.parametrize("family", ["debian", "rhel"])
def test_a_cloud_images_clients_get_every_tool_of_its_family(family):
    spec = spec_of({"image": "/var/lib/libvirt/images/x.qcow2", "imageFamily": family})
    mode, p = MODES[spec.mode], plan(spec)
    client = next(g for g in p.guests if g.role == "client")
    packages = render.role_packages(spec, mode, p, client)
    for tool in TOOLS.values():
        assert set(tool.packages.get(family, ())) <= set(packages), tool.name
    web = next(g for g in p.guests if g.role == "web")
    assert not {pkg for t in TOOLS.values() for pkg in t.packages.get(family, ())} & set(
        render.role_packages(spec, mode, p, web)
    )


def test_a_tool_without_a_package_for_the_image_family_is_refused_and_the_fix_named():
    spec, _ = lab_of({})
    rhel, _ = read_spec({"image": "/var/lib/libvirt/images/rocky.qcow2", "imageFamily": "rhel", "benchTool": "wrk"})
    (problem,) = tool_problems(rhel, TOOLS["wrk"])
    assert problem.key == "benchTool" and "use l2dsr:benchTool ab" in problem.text
    assert tool_problems(spec, TOOLS["wrk"]) == []  # the builtin image has every tool


# ---- vegeta: the open-loop tool, on its real output ---------------------------------------------------
# Recorded on this host (its cores busy with a lab): two vegeta clients at once, each at 150/s for 3 s with
# a connection per request, against one HTTP server (a 5,120-byte file) in a network namespace of its own;
# then one client at 50/s against a port nothing listens on (refused). Each file is what the client's
# command printed; the busy host shows as requests sent up to 27 ms late, which their latencies carry,
# and one answered after a second.
VEGETA = Path(__file__).parent / "data" / "vegeta"
OPEN = Load("http://127.0.0.1:8080/dummy_file", 50, 0, False, seconds=3, rate=150)


def test_vegeta_is_open_loop_and_no_choice_of_bench_tool():
    assert {"vegeta": TOOLS["vegeta"]} == OPEN_LOOP and "vegeta" not in CLOSED_LOOP
    with pytest.raises(ValueError, match="open-loop"):
        TOOLS["vegeta"].command(Load("u", 10, 1000, False))  # a number of requests, no rate
    with pytest.raises(ConfigError) as refused:
        lab_of({"benchTool": "vegeta"})
    assert "l2dsr:benchTool" in str(refused.value) and "ab, wrk" in str(refused.value), str(refused.value)


def test_vegeta_parses_each_clients_real_output():
    for client in ("client01", "client02"):
        text = (VEGETA / f"{client}.txt").read_text()
        run = TOOLS["vegeta"].parse(text, OPEN, 5120)
        assert (run.complete_requests, run.failed_requests, run.non_2xx_responses) == (450, 0, 0)
        assert sum(run.latency_histogram_us.values()) == 450  # one entry per request
        s = vegeta.summary(text)  # from the first request's send to the last answer
        assert run.duration_s == (s["last_ns"] - s["first_ns"]) / 1e9 > 2.9
        assert run.requests_per_second == 450 / run.duration_s
        seconds = vegeta.per_second(text)  # the achieved rate, each second, beside the 150 offered
        assert len(seconds) in (3, 4) and sum(ok for ok, _ in seconds) == 450 and not any(bad for _, bad in seconds)
        assert vegeta.summary(text)["behind_ms"] < vegeta.BEHIND_MS


def test_two_vegeta_clients_merge_exactly():
    runs = [TOOLS["vegeta"].parse((VEGETA / f"{c}.txt").read_text(), OPEN, 5120) for c in ("client01", "client02")]
    starts = [vegeta.summary((VEGETA / f"{c}.txt").read_text())["first_ns"] / 1e9 for c in ("client01", "client02")]
    merged = combine(
        [Placed(r, f"c{i}", s, 0.001) for i, (r, s) in enumerate(zip(runs, starts, strict=True))], vegeta.rank
    )
    assert merged["total_requests"] == 900 and merged["failed_requests"] == 0
    window = max(s + r.duration_s for s, r in zip(starts, runs, strict=True)) - min(starts)
    assert merged["requests_per_second"] == round(900 / window, 2)  # over the common window, not a sum of rates
    every = sorted(us for r in runs for us, n in r.latency_histogram_us.items() for _ in range(n))
    assert merged["latency_percentiles_ms"]["p99"] == round(every[math.ceil(0.99 * 900) - 1] / 1000, 3)
    assert merged["latency_percentile_bounds_ms"] == {}  # per request: exact


def test_vegeta_counts_refused_connections_as_failed():
    text = (VEGETA / "refused.txt").read_text()
    run = TOOLS["vegeta"].parse(text, Load("u", 20, 0, True, seconds=1, rate=50), 5120)
    assert (run.complete_requests, run.failed_requests, run.non_2xx_responses) == (0, 50, 0)
    assert vegeta.per_second(text) == [(0, 50)] and run.latency_histogram_us == {}


def test_vegeta_times_a_late_request_from_when_it_was_due(tmp_path):
    """Coordinated omission, undone: at 10/s (a request due every 100 ms), request 2 left 250 ms late
    and took 1 ms; its latency is 251 ms, not vegeta's 1 ms. Run through the command's own awk."""
    t0 = 1_796_458_000_000_000_000
    rows = [(0, 0, 2), (1, 100, 2), (2, 450, 1), (3, 450, 1)]  # (seq, sent at ms, latency ms)
    csv = "".join(f"{t0 + at * 10**6},200,{lat * 10**6},0,0,,,l2dsr,{seq},GET,http://x/,\n" for seq, at, lat in rows)
    script = tmp_path / "v.awk"
    script.write_text(vegeta.AWK)
    done = subprocess.run(
        ["awk", "-F,", "-v", "period=100000000.0", "-v", "behind=0", "-f", str(script)],
        input=csv,
        capture_output=True,
        text=True,
        check=True,
    )
    assert histogram(done.stdout) == {2000: 2, 251000: 1, 151000: 1}
    assert vegeta.summary(done.stdout)["behind_ms"] == 250.0
