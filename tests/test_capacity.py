"""The capacity search (bench/capacity.py) on simulated devices: pure, so every property is tried on
many devices in milliseconds. A device here is a function of the offered rate and the trial's length:
what it completes, fails, and how busy each VM is."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from bench.capacity import Criteria, Search, Trial, bound_of, judge, search

ROLES = {"client01": "client", "lb": "lb", "web01": "web"}
VEGETA = Path(__file__).parent / "data" / "vegeta"


def device(capacity: float, noise: float = 0.0, seed: int = 1, long_capacity: float = 0.0, client_max: float = 0.0):
    """A device that carries `capacity` requests/s (each trial's capacity off by up to +-noise, seeded),
    `long_capacity` over trials longer than 20 s when set, and whose clients cannot send above
    `client_max` (0: no such limit). Above its capacity the LB's CPU is saturated and the excess fails."""
    rng = random.Random(seed)

    def run(rate: float, seconds: float) -> Trial:
        cap = (long_capacity if long_capacity and seconds > 20 else capacity) * (1 + rng.uniform(-noise, noise))
        sent = round(rate * seconds)
        carried = min(rate, cap)
        failed = sent - round(carried * seconds)
        saturated = client_max and rate > client_max
        return Trial(
            offered_rps=rate,
            seconds=seconds,
            sent=sent,
            completed=sent - failed,
            failed=failed,
            p50_ms=1.0,
            p99_ms=5.0 if rate <= cap else 500.0,
            p999_ms=8.0 if rate <= cap else 900.0,
            cpu={"client01": 1.0 if saturated else 0.3, "lb": min(1.0, rate / cap), "web01": 0.2},
            roles=ROLES,
            invalid=("client01 behind its schedule",) if saturated else (),
        )

    return run


HOW = Search(Criteria(), start_rps=300, floor_rps=10, precision=0.05, max_trials=20, trial_s=10, confirm_s=30)


@pytest.mark.parametrize("capacity", [37.0, 300.0, 451.0, 1000.0, 2999.0])
def test_it_converges_within_the_precision_below_the_capacity(capacity):
    found = search(device(capacity), HOW)
    assert found.stopped == "precision" and found.confirmed
    assert capacity * (1 - HOW.precision) <= found.rate_rps <= capacity
    assert found.failed_rps > found.rate_rps
    assert bound_of(found).startswith("the LB's CPU (lb)")


@pytest.mark.parametrize("seed", range(30))
def test_under_noise_it_never_reports_a_rate_whose_trial_failed(seed):
    found = search(device(500, noise=0.05, seed=seed), HOW)
    at_rate = [v for t, v in found.trials if t.offered_rps == found.rate_rps]
    assert found.rate_rps > 0 and at_rate and at_rate[-1].passed
    if found.confirmed:  # a trial as long as the confirmation passed at the rate reported
        assert [v.passed for t, v in found.trials if t.offered_rps == found.rate_rps and t.seconds == HOW.confirm_s][-1]
    assert found.rate_rps <= 500 * 1.05


def test_a_rate_not_sustained_over_the_longer_trial_is_searched_below():
    found = search(device(1000, long_capacity=600), HOW)
    assert found.confirmed and found.rate_rps <= 600
    assert any(t.seconds == HOW.confirm_s and not v.passed for t, v in found.trials)


@pytest.mark.parametrize("budget", [1, 2, 3, 5])
def test_it_stops_at_the_trial_budget(budget):
    found = search(device(777, noise=0.02), Search(Criteria(), 300, 10, 0.01, budget, 10, 30))
    assert len(found.trials) == budget and found.stopped == "trial budget" and not found.confirmed
    assert found.rate_rps == 0 or any(v.passed for t, v in found.trials if t.offered_rps == found.rate_rps)


def test_when_the_budget_ends_after_a_failed_confirmation_the_best_short_pass_below_it_is_reported():
    full = search(device(1000, long_capacity=600), HOW)
    failed_long = next(i for i, (t, v) in enumerate(full.trials) if t.seconds == HOW.confirm_s and not v.passed)
    cut = Search(HOW.criteria, HOW.start_rps, HOW.floor_rps, HOW.precision, failed_long + 1, HOW.trial_s, HOW.confirm_s)
    found = search(device(1000, long_capacity=600), cut)
    assert found.stopped == "trial budget" and not found.confirmed
    not_sustained = found.trials[-1][0].offered_rps
    short_passes = [t.offered_rps for t, v in found.trials if v.passed and t.offered_rps < not_sustained]
    assert found.rate_rps == max(short_passes) > 0  # not 0, not the rate the long trial failed at


def test_a_host_whose_cpus_the_vms_saturated_bounds_the_rate_before_any_guest():
    from bench.capacity import hosts_busy

    # 2 CPUs for 10 s: 19.2 CPU-seconds is 96% of them; h2's VMs used 30% of its 4
    cpu_s = {"client01": 8.0, "lb": 6.2, "web01": 5.0, "web02": 12.0}
    on = {"client01": "local", "lb": "local", "web01": "local", "web02": "h2"}
    assert hosts_busy(cpu_s, 10.0, on, {"local": 2, "h2": 4}) == {"h2": 0.3, "local": 0.96}
    assert hosts_busy(cpu_s, 10.0, on, {"local": 2}) == {"local": 0.96}  # h2's CPUs unknown: left out
    assert hosts_busy(cpu_s, 0.0, on, {"local": 2}) == {}

    def on_a_full_host(rate: float, seconds: float) -> Trial:
        trial = device(500, client_max=400)(rate, seconds)
        full = {"local": 0.96 if rate > 400 else 0.7, "h2": 0.3}
        return Trial(**{**trial.__dict__, "hosts_busy": full})

    found = search(on_a_full_host, HOW)
    assert bound_of(found) == "the host's CPUs (local 96% of its CPUs busy with the lab's VMs)"
    assert bound_of(search(device(500, client_max=400), HOW)) == "a client's CPU (client01)"


def test_a_saturated_client_bounds_the_rate_as_the_clients_not_the_lb():
    found = search(device(2000, client_max=700), HOW)
    assert found.stopped == "precision" and 700 * (1 - HOW.precision) <= found.rate_rps <= 700
    assert bound_of(found) == "a client's CPU (client01)"
    assert all(not v.passed for t, v in found.trials if t.offered_rps > 700)


def test_below_the_floor_nothing_is_reported():
    found = search(device(4), HOW)
    assert found.rate_rps == 0 and found.stopped == "floor" and not found.confirmed
    assert all(not v.passed for _, v in found.trials)


def test_each_criterion_names_what_it_missed():
    trial = Trial(100, 10, 1000, 900, 100, 1, 120, 200, roles=ROLES)
    verdict = judge(trial, Criteria(max_failed_pct=0.1, p99_ms=50))
    assert not verdict.passed
    assert verdict.failed_criteria == ("failed 10% > 0.1%", "achieved 90/s < 99% of 100/s", "p99 120.0 ms > 50 ms")
    slow = Trial(10.2, 10, 102, 96, 0, 1, 2, 3)  # 9.6/s: the rates' digits that tell them apart
    assert judge(slow, Criteria()).failed_criteria == ("achieved 9.6/s < 99% of 10.2/s",)
    ok = Trial(100, 10, 1000, 1000, 0, 1, 20, 30, roles=ROLES)
    assert judge(ok, Criteria(p99_ms=50)).passed and not judge(ok, Criteria(p99_ms=10)).passed
    pdr = Trial(100, 10, 10000, 9995, 5, 1, 2, 3)
    assert judge(pdr, Criteria(max_failed_pct=0.1, min_achieved_ratio=0.99)).passed
    assert not judge(pdr, Criteria(max_failed_pct=0.0)).passed  # NDR: not one failure
    behind = Trial(100, 10, 1000, 1000, 0, 1, 2, 3, invalid=("client01 behind its schedule",))
    assert not judge(behind, Criteria()).passed and judge(behind, Criteria()).invalid


def test_latency_bound_when_no_vm_was_busy():
    def slow(rate: float, seconds: float) -> Trial:
        sent = round(rate * seconds)
        return Trial(rate, seconds, sent, sent, 0, 1, 10 if rate < 250 else 90, 100, {"lb": 0.4}, ROLES)

    found = search(slow, Search(Criteria(p99_ms=50), 100, 10, 0.05, 20, 5, 10))
    assert 250 * 0.95 <= found.rate_rps < 250
    assert bound_of(found) == "latency (p99 90.0 ms > 50 ms)"


# ---- a trial's numbers from the clients' real output (bench/searchrun.py) ----------------------------


def _measured(cpu: dict[str, float]):
    from bench.measure import Measured
    from bench.parse import Placed
    from loadtools import TOOLS, Load

    texts = [(VEGETA / f"{c}.txt").read_text() for c in ("client01", "client02")]
    load = Load("http://x/file-5k", 50, 0, False, seconds=3, rate=150)
    placed = [Placed(TOOLS["vegeta"].parse(t, load, 5120), f"client0{i + 1}", 0.0, 0.0) for i, t in enumerate(texts)]
    deltas = {"lb": {"rx_bytes": 90_000, "tx_bytes": 9_000}}
    return texts, Measured(placed, {}, deltas, cpu, {}, {"load": 5.0}, texts, {"lb": 2_500_000_000, "web01": 5e9})


def _bench():
    from bench.spec import bench_spec
    from lab.addressing import plan
    from resolution import Configured
    from tests.conftest import lab_of
    from tests.test_bench import refs

    spec, mode = lab_of({"mode": "dsr", "webCount": 2, "clientCount": 2, "benchSearch": True})
    return bench_spec("t", Configured(spec, mode, plan(spec)), refs("t", plan(spec)))


def test_a_trial_is_made_of_every_clients_counts_and_their_merged_requests():
    from bench.parse import merge, percentile_us
    from bench.searchrun import trial_of
    from loadtools import vegeta

    bench = _bench()
    texts, measured = _measured({"client01": 0.4, "client02": 0.5, "lb": 0.97, "web01": 0.3, "web02": 0.3})
    trial, record = trial_of(bench, 300.0, 3.0, texts, measured, {"local": 2})
    assert (trial.sent, trial.completed, trial.failed) == (900, 900, 0)
    assert trial.hosts_busy == record["hosts_busy"] == {"local": 0.75}  # 7.5 CPU-s of 2 CPUs over 5 s
    hist = merge([p.run.latency_histogram_us for p in measured.placed])
    assert trial.p99_ms == round(percentile_us(hist, 99, vegeta.rank) / 1000, 3) and trial.p50_ms <= trial.p99_ms
    assert trial.invalid == () and judge(trial, Criteria()).passed
    assert record["lb_bytes_per_request"] == round(99_000 / 900) and record["hypervisor_cpu_s"] == {
        "lb": 2.5,
        "web01": 5.0,
    }
    assert sum(ok for ok, _ in record["per_second"]) == 900


def test_a_saturated_client_invalidates_the_trial_one_behind_with_cpu_to_spare_does_not():
    from bench.searchrun import trial_of
    from loadtools import vegeta

    bench = _bench()
    texts, measured = _measured({"client01": 0.97, "client02": 0.5, "lb": 0.5})
    trial, record = trial_of(bench, 300.0, 3.0, texts, measured)
    assert trial.invalid == ("client01's CPU 97% busy",), trial.invalid
    assert not judge(trial, Criteria()).passed and record["invalid"] == list(trial.invalid)
    assert record["behind_ms"] == {
        c: vegeta.summary(t)["behind_ms"] for c, t in zip(("client01", "client02"), texts, strict=True)
    }
    texts, measured = _measured({"client01": 0.6, "client02": 0.5, "lb": 0.5})
    assert trial_of(bench, 300.0, 3.0, texts, measured)[0].invalid == ()


# ---- the table and the report's charts, on a real search ------------------------------------------------
# proxy-lab.json: the lab stack (2 clients, the LB, 2 webs, under emulation) searched under proxy at 1 and
# 128 KiB with CI's settings: 125/s confirmed at 1 KiB (the clients' CPU), 60/s unconfirmed at 128 KiB.
REAL = json.loads((Path(__file__).parent / "data" / "capacity" / "proxy-lab.json").read_text())["capacity"]


def test_the_capacity_table_says_what_each_point_found():
    from bench.capacity_report import capacity_table

    table = capacity_table(REAL)
    assert "| proxy | connections | 1 | 1 | 125 | 0.001 | yes | a client's CPU (client01, client02) |" in table
    assert "| proxy | connections | 128 | 1 | 60 | 0.063 | no | throughput (achieved 62/s < 99% of 69/s) |" in table
    assert "17.5 / 117.2 / 213.7 | 7 | precision |" in table  # latency at half of 125/s; 6 trials and that one


def test_the_report_puts_capacity_beside_the_closed_loop_table(tmp_path):
    from bench.capacity_report import ratios
    from bench.report import write_report

    dsr = [{**p, "mode": "dsr", "rate_rps": p["rate_rps"] * (1.1 if p["size_kib"] == 1 else 2.5)} for p in REAL]
    assert ratios(REAL + dsr, "dsr", "proxy") == {("connections", 1, 1): 1.1, ("connections", 128, 1): 2.5}
    results = [
        {"mode": m, "tool": "ab", "keepalive": False, "raw_dir": f"r/{m}", "summary": [], "capacity": points}
        for m, points in (("proxy", REAL), ("dsr", dsr))
    ]
    text = write_report(results, tmp_path).read_text()
    assert "## Capacity (docs/capacity.md)" in text and "| dsr | connections | 128 | 1 | 150 |" in text
    for png in ("capacity.png", "capacity-ratio.png", "capacity-latency.png"):
        data = (tmp_path / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000 and f"({png})" in text


def test_the_closed_loop_p99_is_put_beside_the_open_loop_p99_at_the_same_rate():
    from bench.capacity_report import closed_against_open

    def step(size_bytes: int, keepalive: bool) -> dict:
        return {
            "tool": "ab", "concurrency": 20, "keepalive": keepalive, "file_size_bytes": size_bytes,
            "requests_per_second": 131.0, "latency_percentiles_ms": {"p50": 30.0, "p99": 106.0},
        }  # fmt: skip

    result = {"mode": "proxy", "capacity": REAL, "summary": [step(1024, False), step(1024, True), step(5120, False)]}
    (row,) = closed_against_open(result)  # only the step of a searched size and the same test
    # the valid trials at 1 KiB were offered 100 and 125/s (twice); 137.5 and 150 saturated a client
    near = [t for t in REAL[0]["trials"] if t["offered_rps"] == 125.0 and not t["invalid"]][0]
    assert row == {
        "mode": "proxy", "test": "connections", "size_kib": 1, "closed_loop_tool": "ab", "concurrency": 20,
        "closed_loop_rps": 131.0, "closed_loop_p99_ms": 106.0, "open_loop_offered_rps": 125.0,
        "open_loop_achieved_rps": near["achieved_rps"], "open_loop_p99_ms": near["latency_ms"]["p99"],
    }  # fmt: skip
    assert closed_against_open({"mode": "proxy", "capacity": REAL, "summary": [step(5120, False)]}) == []


def test_the_docs_page_of_a_sweep_holds_its_tables_and_charts_the_same_each_time(tmp_path):
    from bench.capacity_report import capacity_table, closed_open_table, ratio_table
    from tests.capacity_sweep import write_docs

    dsr = [{**p, "mode": "dsr", "rate_rps": p["rate_rps"] * (1.1 if p["size_kib"] == 1 else 2.5)} for p in REAL]
    table = ratio_table(REAL + dsr, "proxy")
    # 128 KiB: proxy's search ended on its budget (60/s unconfirmed), so the ratio is starred and said so
    assert "| Mode / proxy | Test | 1 KiB | 128 KiB |" in table and "| dsr | connections | 1.10 | 2.50* |" in table
    assert "\\* a side is unconfirmed" in table
    nothing = [{**p, "rate_rps": 0.0} if p["size_kib"] == 128 else p for p in dsr]  # no trial passed: no ratio
    assert "| dsr | connections | 1.10 | - |" in ratio_table(REAL + nothing, "proxy")
    row = {
        "mode": "dsr", "test": "connections", "size_kib": 1, "closed_loop_tool": "ab", "concurrency": 20,
        "closed_loop_rps": 131.0, "closed_loop_p99_ms": 106.0, "open_loop_offered_rps": 125.0,
        "open_loop_achieved_rps": 125.2, "open_loop_p99_ms": 268.8,
    }  # fmt: skip
    assert "| dsr | connections | 1 | ab -c 20 | 131 | 106.0 | 125.0 | 125.2 | 268.8 |" in closed_open_table([row])
    record = {
        "host_cpus": {"local": 2},
        "settings": {"stack": "lab", "modes": "proxy,dsr", "trial_s": 5},
        "stack_config": {"l2dsr:webCount": "2", "l2dsr:benchSearchMaxTrials": 10},
        "modes": {"proxy": REAL, "dsr": dsr},
        "up_s": {"proxy": 1140, "dsr": 1020},
        "closed_against_open": [row],
    }
    page = write_docs(record, tmp_path).read_text()
    assert "`--stack lab --modes proxy,dsr --trial-s 5`" in page and "`webCount` 2" in page
    assert "benchSearchMaxTrials" not in page and "proxy 19, dsr 17" in page and "on a host of 2 CPUs (local)" in page
    assert "## What bound each point" in page and "| proxy | connections | 1 | - | client01 92% |" in page
    assert table in page and capacity_table(REAL + dsr) in page and "| ab -c 20 |" in page
    svgs = sorted((tmp_path / "capacity-sweep").glob("*.svg"))
    assert [p.name for p in svgs] == ["capacity-latency.svg", "capacity-ratio.svg", "capacity.svg"]
    assert all(f"(capacity-sweep/{p.name})" in page for p in svgs)
    first = [p.read_bytes() for p in svgs]
    older = write_docs({**record, "settings": {}, "stack_config": {}, "notes": ["proxy ran before 3fcefb7"]}, tmp_path)
    said = older.read_text()
    assert "its options are not in this record" in said and "config is not in this record" in said
    assert "- proxy ran before 3fcefb7" in said and "`--" not in said
    write_docs(record, tmp_path)
    assert [p.read_bytes() for p in svgs] == first and b"<dc:date>" not in first[0]
    # each unconfirmed point is drawn again, hollow: one more marker than the all-confirmed drawing has
    from bench.capacity_report import capacity_charts

    sure = [{**p, "confirmed": True} for p in REAL + dsr]
    (tmp_path / "sure").mkdir()
    capacity_charts(sure, tmp_path / "sure", "proxy", fmt="svg")
    unsure = sum(not p["confirmed"] for p in REAL + dsr)
    drawn = (tmp_path / "capacity-sweep" / "capacity.svg").read_text().count("<use ")
    assert unsure and drawn == (tmp_path / "sure" / "capacity.svg").read_text().count("<use ") + unsure


def test_what_bound_a_point_shows_the_hosts_share_at_the_first_failure_above_it():
    from bench.capacity_report import host_table

    def trial(rate: float, passed: bool, **more) -> dict:
        cpu_s = {"client01": 9.0, "lb": 4.0, "web01": 5.0}
        return {
            "offered_rps": rate,
            "passed": passed,
            "cpu": {"client01": 0.91, "lb": 0.3},
            "hypervisor_cpu_s": cpu_s,
        } | more

    point = {
        "mode": "dsr",
        "test": "connections",
        "size_kib": 128,
        "rate_rps": 40.0,
        "bound": "a client's CPU (client01)",
    }
    trials = [trial(80, False, read_s=8.0), trial(40, True, read_s=8.0), trial(60, False, read_s=10.0)]
    on = {"client01": "local", "lb": "local", "web01": "local"}
    table = host_table([point | {"trials": trials}], on, {"local": 2})
    assert "| dsr | connections | 128 | local 90% | client01 91% | a client's CPU (client01) |" in table  # 18/(10x2)
    stored = [trial(60, False, read_s=10.0, hosts_busy={"local": 0.97})]  # a trial that carries its own
    assert "| local 97% |" in host_table([point | {"trials": stored}], on, {"local": 2})
    assert host_table([point | {"trials": [trial(40, True)]}], on, {"local": 2}).count("\n") == 2  # none above
