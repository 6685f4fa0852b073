"""Parsing, combining and judging benchmark runs: real output captured from the lab, known inputs."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

import lbmodes
from bench import clocks
from bench.judge import balance_flag, mode_problem, response_share
from bench.parse import ParseError, Placed, RunResult, combine
from bench.probes import BenchmarkFailed
from bench.report import results_table
from bench.spec import BenchSpec, bench_spec
from lab.addressing import domain_name, plan
from loadtools import TOOLS, Load, clock_start
from loadtools.ab import parse as parse_ab
from loadtools.base import HISTOGRAM_START
from loadtools.wrk import parse as parse_wrk
from resolution import Configured
from resources.base import props_of, read_props
from runtime.vm import VmRef
from tests.conftest import lab_of

DATA = Path(__file__).parent / "data"

# eth0 byte counters measured around the two captured runs (lab stack, 2 webs, ab -c 20 -n 2000).
PROXY_LB = {"rx_bytes": 12537935, "tx_bytes": 12825871}
PROXY_CLIENTS = {"rx_bytes": 11736232, "tx_bytes": 1035812}
DSR_LB = {"rx_bytes": 1009977, "tx_bytes": 1009835}
DSR_CLIENTS = {"rx_bytes": 11692736, "tx_bytes": 1017836}


def test_parse_ab_real_dsr_run():
    r = parse_ab((DATA / "ab-dsr-c20-n2000.txt").read_text())
    assert (r.concurrency, r.complete_requests, r.failed_requests, r.non_2xx_responses) == (20, 2000, 0, 0)
    assert r.requests_per_second == 337.32
    assert (r.time_per_request_ms, r.time_per_request_all_ms) == (59.291, 2.965)
    assert r.transfer_rate_kbps == 1768.94 and r.document_length == 5120 and r.duration_s == 5.929
    assert r.latency_percentiles_ms["p50"] == 52 and r.latency_percentiles_ms["p100"] == 173
    assert len(r.latency_percentiles_ms) == 9


def test_parse_ab_real_proxy_run():
    r = parse_ab((DATA / "ab-proxy-c20-n2000.txt").read_text())
    assert r.complete_requests == 2000 and r.failed_requests == 0
    assert 0 < r.requests_per_second < 337.32


def test_parse_ab_counts_non_2xx_and_failures():
    text = (DATA / "ab-dsr-c20-n2000.txt").read_text()
    text = text.replace(
        "Failed requests:        0", "Failed requests:        7\n   (Connect: 0, Receive: 0, Length: 7, Exceptions: 0)"
    )
    text = text.replace("Total transferred:", "Non-2xx responses:      12\nTotal transferred:")
    r = parse_ab(text)
    assert (r.failed_requests, r.non_2xx_responses) == (7, 12)
    assert r.complete_requests == 2000 - 7  # ab's "complete" counts the failed ones too


def test_parse_ab_says_when_ab_did_not_finish():
    with pytest.raises(ParseError, match="ab did not finish: .*Connection refused"):
        parse_ab("Benchmarking 192.168.16.100 (be patient)\napr_socket_recv: Connection refused (111)\n")


TWO = DATA / "two-clients"  # both clients of the lab at once (dsr, 2 webs), each asked for 2,000 requests


def placed(kind: str) -> list[Placed]:
    """The captured pair of `kind` (ab, ab-keepalive, wrk-keepalive, wrk-close), placed on the host's clock."""
    offsets = json.loads((TWO / f"{kind}.offsets.json").read_text())
    tool = TOOLS[kind.split("-")[0]]
    found = []
    for client in ("client01", "client02"):
        text = (TWO / f"{kind}.{client}.txt").read_text()
        run = tool.parse(text, Load("http://192.168.16.100/dummy_file", 20, 2000, "keepalive" in kind), 5120)
        start = clock_start(text) / 1e9 - offsets[client]["offset_s"]
        found.append(Placed(run, client, start, offsets[client]["error_s"]))
    return found


@pytest.mark.parametrize("kind", ["ab", "ab-keepalive", "wrk-keepalive", "wrk-close"])
def test_one_clients_merged_percentiles_are_the_tools_own(kind):
    tool = TOOLS[kind.split("-")[0]]
    for one in placed(kind):
        merged = combine([one], tool.rank, tool.grid_pct)
        assert merged["total_requests"] == one.run.complete_requests
        assert merged["requests_per_second"] == pytest.approx(one.run.requests_per_second, rel=0.002)
        for p, own in one.run.latency_percentiles_ms.items():
            if p in merged["latency_percentiles_ms"]:
                # ab prints whole milliseconds; wrk two decimals of its unit
                assert merged["latency_percentiles_ms"][p] == pytest.approx(
                    own, abs=0.01 if kind.startswith("wrk") else 0
                ), p


@pytest.mark.parametrize("kind", ["ab", "ab-keepalive", "wrk-keepalive", "wrk-close"])
def test_two_clients_combine_over_their_common_window(kind):
    tool = TOOLS[kind.split("-")[0]]
    both = placed(kind)
    merged = combine(both, tool.rank, tool.grid_pct)
    completed = sum(p.run.complete_requests for p in both)
    assert merged["total_requests"] == completed  # completed, whatever was asked (wrk runs for a duration)
    # client02's clock is 1.09 s behind the host's: by their own clocks the starts are 0.9 s or more
    # apart; placed on the host's clock, within a quarter of a second (SSH sessions started together)
    raw = [clock_start((TWO / f"{kind}.{c}.txt").read_text()) / 1e9 for c in ("client01", "client02")]
    assert raw[0] - raw[1] > 0.9
    assert max(merged["start_skew_ms"].values()) < 250 and min(merged["start_skew_ms"].values()) == 0
    assert 0 < merged["window_error_ms"] < 100
    window = max(p.start_s + p.run.duration_s for p in both) - min(p.start_s for p in both)
    assert merged["window_s"] == pytest.approx(window, abs=0.001)
    assert window >= max(p.run.duration_s for p in both)
    assert merged["requests_per_second"] == pytest.approx(completed / window, rel=1e-4)
    assert merged["requests_per_second"] <= sum(p.run.requests_per_second for p in both)  # not a sum of rates
    assert merged["latency_ms"] == pytest.approx(1000 / merged["requests_per_second"], rel=1e-3)
    for p in ("p50", "p90", "p99"):
        own = [x.run.latency_percentiles_ms[p] for x in both]
        assert min(own) - 0.01 <= merged["latency_percentiles_ms"][p] <= max(own) + 0.01, (p, own)


def test_merged_percentiles_are_of_every_request_not_the_worst_client():
    """Known data: 90 fast requests on one client, 10 slow on the other. The combined p50 is fast;
    the maximum of the clients' p50s (the old way) would be slow."""
    fast = RunResult("ab", False, 10, 90, 0, 0, 90.0, 1, 1, 1, 5120, 1.0, {"p50": 2.0}, {2000: 90})
    slow = RunResult("ab", False, 10, 10, 0, 0, 10.0, 1, 1, 1, 5120, 1.0, {"p50": 900.0}, {900000: 10})
    merged = combine([Placed(fast, "c1", 0.0, 0.001), Placed(slow, "c2", 0.5, 0.001)], TOOLS["ab"].rank)
    assert merged["latency_percentiles_ms"]["p50"] == 2.0 and merged["latency_percentiles_ms"]["p99"] == 900.0
    assert merged["window_s"] == 1.5 and merged["requests_per_second"] == round(100 / 1.5, 2)
    assert merged["start_skew_ms"] == {"c1": 0.0, "c2": 500.0}


def test_wrk_percentiles_carry_the_bounds_of_its_grid():
    tool = TOOLS["wrk"]
    merged = combine(placed("wrk-keepalive"), tool.rank, tool.grid_pct)
    for p, (low, high) in merged["latency_percentile_bounds_ms"].items():
        assert low <= merged["latency_percentiles_ms"][p] <= high, p
    assert combine(placed("ab"), TOOLS["ab"].rank)["latency_percentile_bounds_ms"] == {}  # ab's are exact


def test_a_run_without_its_latency_data_is_refused():
    text = (TWO / "ab.client01.txt").read_text().split(HISTOGRAM_START)[0]
    run = TOOLS["ab"].parse(text, Load("http://x/dummy_file", 20, 2000, False), 5120)
    with pytest.raises(ParseError, match="no latency histogram"):
        combine([Placed(run, "client01", 0.0, 0.0)], TOOLS["ab"].rank)


def test_clock_offset_takes_the_shortest_round_trip():
    # (host t0, client clock, host t1) in ns: the second round is the tight one
    offset = clocks.best([(0, 5_300_000_000, 400_000_000), (1_000_000_000, 6_010_000_000, 1_020_000_000)])
    assert offset.seconds == pytest.approx(5.0) and offset.error_s == pytest.approx(0.01)


def test_response_share_tells_the_modes_apart():
    assert response_share(PROXY_LB, PROXY_CLIENTS) == pytest.approx(1.0, abs=0.02)
    assert abs(response_share(DSR_LB, DSR_CLIENTS)) < 0.01


def problem(mode: str, lb: dict, clients: dict) -> str | None:
    return mode_problem(mode, lbmodes.MODES[mode].shares, lb, clients)


def test_measured_runs_match_their_modes():
    assert problem("proxy", PROXY_LB, PROXY_CLIENTS) is None
    assert problem("dsr", DSR_LB, DSR_CLIENTS) is None
    # The replies take the proxy's path under nat (through the LB) and dsr's under l3dsr (around it).
    assert problem("nat", PROXY_LB, PROXY_CLIENTS) is None
    assert problem("l3dsr", DSR_LB, DSR_CLIENTS) is None


def test_a_run_that_contradicts_its_mode_is_named():
    assert "not direct server return" in problem("dsr", PROXY_LB, PROXY_CLIENTS)
    assert "bypassing the proxy" in problem("proxy", DSR_LB, DSR_CLIENTS)
    assert "a web replies to the client directly" in problem("nat", DSR_LB, DSR_CLIENTS)
    assert "tunl0" in problem("l3dsr", PROXY_LB, PROXY_CLIENTS)
    # A web answering ARP for the VIP: the client talks to it directly, the LB sees no requests.
    silent_lb = {"rx_bytes": 20000, "tx_bytes": 15000}
    assert "answering ARP for the VIP" in problem("dsr", silent_lb, DSR_CLIENTS)


def test_results_table_has_the_seeds_columns_and_says_what_each_row_measured():
    row = {
        "mode": "dsr",
        "tool": "ab",
        "keepalive": False,
        "clients": 2.0,
        "lb_threads": 1.0,
        "concurrency": 20.0,
        "total_requests": 2000.0,
        "total_requests_asked": 2000.0,
        "file_size_bytes": 5120.0,
        "requests_per_second": 337.32,
        "latency_ms": 2.965,
        "latency_percentiles_ms": {"p50": 93.0, "p99": 240.0},
        "failed_requests": 0.0,
        "non_2xx_responses": 0.0,
    }
    table = results_table([row]).splitlines()
    assert table[0] == (
        "| Mode | Tool | Clients | Thread | Concurrency | Total Requests | File Size | Requests/sec | Latency (ms) "
        "| p50 (ms) | p99 (ms) | Failed | Flags |"
    )
    assert (
        table[2]
        == "| dsr | ab, a connection per request | 2 | 1 | 20 | 2,000 | 5 KiB | 337.32 | 2.965 | 93.0 | 240.0 | 0 | - |"
    )


def test_results_table_shows_completed_requests_with_the_asked_beside_them_and_flags():
    row = {
        "mode": "proxy",
        "tool": "wrk",
        "keepalive": True,
        "lb_threads": 4,
        "concurrency": 30000,
        "total_requests": 96430,
        "total_requests_asked": 90000,
        "file_size_bytes": 5120,
        "repeats": 3,
        "requests_per_second": 13258.52,
        "requests_per_second_min": 13000.0,
        "requests_per_second_max": 13300.5,
        "latency_ms": 0.084,
        "latency_ms_min": 0.08,
        "latency_ms_max": 0.09,
        "failed_requests": 0,
        "non_2xx_responses": 0,
        "flags": ["client CPU saturated: client01 99%"],
    }
    line = results_table([row]).splitlines()[2]
    assert line == (
        "| proxy | wrk, keep-alive | 1 | 4 | 30,000 | 96,430 (asked 90,000) | 5 KiB | 13,258.52 (13,000.00-13,300.50) | "
        "0.084 (0.080-0.090) | - | - | 0 | client CPU saturated: client01 99% |"
    )


def refs(stack: str, p) -> dict[str, VmRef]:
    return {
        g.name: VmRef(g.name, g.role, str(g.address), domain_name(stack, g), f"/tmp/{g.name}.log") for g in p.guests
    }


def floats(value):
    """What Pulumi's state gives back: every number a float (protobuf Struct)."""
    if isinstance(value, dict):
        return {k: floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [floats(v) for v in value]
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


@pytest.mark.parametrize("mode", sorted(lbmodes.MODES))
def test_the_benchmark_plan_survives_pulumi_number_encoding(mode):
    """Declared once: the plan the program builds is the plan the provider reads back, typed."""
    spec, mode_ = lab_of(
        {"mode": mode, "webCount": 2, "benchConcurrency": [10, 20], "benchRepeats": 2, "benchThreads": [1, 2]}
    )
    p = plan(spec)
    built = bench_spec("lab", Configured(spec, mode_, p), refs("lab", p))
    stored = floats(props_of(built))
    assert stored["concurrency"] == [10.0, 20.0]
    back = read_props(BenchSpec, stored)
    assert back == built
    assert all(isinstance(v, int) for v in back.concurrency) and back.shares == mode_.shares


def _summary(mode: str, threads: int, conc: int, rps: float, bpr: float, tool: str = "ab") -> dict:
    return {
        "mode": mode,
        "tool": tool,
        "keepalive": tool == "wrk",
        "lb_threads": threads,
        "concurrency": conc,
        "total_requests": conc * 3,
        "file_size_bytes": 5120,
        "repeats": 2,
        "requests_per_second": rps,
        "requests_per_second_min": rps * 0.9,
        "requests_per_second_max": rps * 1.1,
        "latency_ms": 1000 / rps,
        "latency_ms_min": 900 / rps,
        "latency_ms_max": 1100 / rps,
        "latency_percentiles_ms": {"p50": 1.0, "p99": 10.0 if mode == "proxy" else 4.0},
        "failed_requests": 0,
        "non_2xx_responses": 0,
        "lb_response_share": 1.0,
        "lb_bytes_per_request": bpr,
        "flags": [],
    }


def _save(folder: Path, stamp: str, result: dict) -> None:
    (folder / stamp).mkdir(parents=True)
    (folder / stamp / "result.json").write_text(json.dumps(result))


def test_report_compares_the_newest_run_of_each_mode_on_a_stack_like_for_like(tmp_path):
    """`up` in proxy, then in dsr, on one stack: the report compares them (not only the newest run),
    and a wrk run on the same stack is shown but never put beside an ab run as comparable."""
    from bench.report import load_results, write_report

    def result(mode, rows, tool="ab"):
        return {"mode": mode, "tool": tool, "keepalive": tool == "wrk", "raw_dir": f"r/{mode}", "summary": rows}

    lab = tmp_path / "lab"
    _save(lab, "20261126T000000Z", result("proxy", [_summary("proxy", 1, c, 500.0, 6200) for c in (10, 20)]))
    _save(
        lab,
        "20261126T010000Z",
        result("proxy", [_summary("proxy", t, c, 1000 * t + c / 10, 6200) for t in (1, 2) for c in (10, 20)]),
    )
    _save(lab, "20261126T020000Z", result("dsr", [_summary("dsr", 1, c, 1500 + c / 10, 560) for c in (10, 20)]))
    _save(lab, "20261126T030000Z", result("dsr", [_summary("dsr", 1, c, 9000.0, 560, "wrk") for c in (10, 20)], "wrk"))
    results = load_results([lab])
    assert sorted((r["mode"], r["tool"]) for r in results) == [("dsr", "ab"), ("dsr", "wrk"), ("proxy", "ab")]
    text = write_report(results, tmp_path / "report").read_text()
    assert "## lab proxy (ab, a connection per request)" in text and "## lab dsr (wrk, keep-alive)" in text
    assert (
        "| ab, a connection per request | 10 | 1 | 1,001.00 | dsr | 1,501.00 | 1.50x | 10.0 | 4.0 | 6,200 | 560 |"
        in text
    )
    assert "500.00" not in text.split("## Each mode against proxy")[1]  # the older proxy run is not compared
    assert "9,000.00" not in text.split("## Each mode against proxy")[1]  # nor wrk against ab
    for png in ("rps.png", "latency.png"):
        data = (tmp_path / "report" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
        assert f"![{png[:-4]}]({png})" in text


def test_a_single_point_matrix_is_drawn_as_bars(tmp_path, monkeypatch):
    import matplotlib.axes

    from bench.report import charts

    drawn: list[str] = []
    monkeypatch.setattr(matplotlib.axes.Axes, "bar", lambda self, *a, **k: drawn.append("bar"))
    monkeypatch.setattr(matplotlib.axes.Axes, "errorbar", lambda self, *a, **k: drawn.append("line"))
    one = [
        {"mode": "proxy", "summary": [_summary("proxy", 1, 40, 600.0, 6200)]},
        {"mode": "dsr", "summary": [_summary("dsr", 1, 40, 900.0, 560)]},
    ]
    charts(one, tmp_path)
    assert drawn == ["bar", "bar"] * 2
    drawn.clear()
    two = [{"mode": "dsr", "summary": [_summary("dsr", 1, c, 900.0, 560) for c in (20, 40)]}]
    charts(two, tmp_path)
    assert drawn == ["line"] * 2


def test_report_draws_the_scaling_curve(tmp_path):
    from bench.report import write_report

    def point(label: str, vms: int, up_s: float) -> dict:
        return {
            "label": label,
            "vms": vms,
            "up_s": up_s,
            "boot_s_max": up_s / 3,
            "boot_cpu_s_median": 88.0,
            "waited_s_max": up_s / 2,
            "qemu_rss_mib_per_guest": 610.5,
            "host_memory_used_mib": 700 * vms,
            "requests_per_second": [150.0, 160.0],
        }

    scale = {
        "points": [
            point("webCount 2", 4, 300),
            point("webCount 25, proxy", 27, 1500),
            point("webCount 25, switch to dsr", 27, 400),
        ],
        "phases": {"switch_over_full_up": 0.27},
    }
    text = write_report([], tmp_path / "report", scale).read_text()
    assert (
        "## Scaling" in text
        and "| webCount 25, proxy | 27 | 1,500 | 500 | 88 | 750 | 610.5 | 18,900 | 150, 160 |" in text
    )
    assert (tmp_path / "report" / "scaling.png").read_bytes()[:4] == b"\x89PNG"


def test_settled_counts_client_connections_to_the_vip_and_orphans():
    from bench.counters import parse_reading, proc_net_tcp
    from bench.probes import unsettled

    assert proc_net_tcp("192.168.16.100", 80) == "6410A8C0:0050"  # as /proc/net/tcp writes it

    def left(open_, tcp):
        return unsettled(parse_reading(f"cpu 10 5\ndrops 0 0\nlisten\nopen {open_}\ntcp {tcp}\n", False).lines)

    assert left(0, "inuse 3 orphan 0 tw 2 alloc 5 mem 0") == 0
    assert left(3, "inuse 9 orphan 0 tw 0 alloc 9 mem 1") == 3
    assert left(0, "inuse 9 orphan 2 tw 2 alloc 9 mem 1") == 2


def test_parse_wrk_real_run_on_a_lab_guest():
    r = parse_wrk((DATA / "wrk-c10-3s.txt").read_text(), Load("u", 10, 3000, True), 5120)
    assert (r.tool, r.concurrency, r.complete_requests, r.failed_requests) == ("wrk", 10, 4690, 0)
    assert r.requests_per_second == 1557.42 and r.duration_s == pytest.approx(3.01)
    assert r.time_per_request_ms == pytest.approx(6.37)
    assert r.latency_percentiles_ms == {"p50": 6.24, "p75": 6.43, "p90": 6.67, "p99": 10.13}
    assert r.transfer_rate_kbps == pytest.approx(7.98 * 1024)


def test_parse_wrk_counts_socket_errors_and_non_2xx():
    text = (
        (DATA / "wrk-c10-3s.txt")
        .read_text()
        .replace(
            "Requests/sec:",
            "  Socket errors: connect 1, read 2, write 0, timeout 3\n  Non-2xx or 3xx responses: 7\nRequests/sec:",
        )
    )
    r = parse_wrk(text, Load("u", 10, 3000, True), 5120)
    assert (r.failed_requests, r.non_2xx_responses) == (6, 7)


def test_ssh_stops_on_cancel_but_clean_up_still_runs(tmp_path, monkeypatch):
    """A cancel ends a running command within a second; clean-up after it (cancellable=False) still runs."""
    import time

    import runtime
    from runtime.ssh import Ssh

    fake = tmp_path / "ssh"
    # One process, like ssh, standing in for a remote command that takes a while.
    fake.write_text(f"#!/bin/sh\nexec {sys.executable} -c 'import time; time.sleep(3); print(\"done\")'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setattr("runtime.ssh.assert_in_lab_namespace", lambda: None)
    ssh = Ssh("lab", "/dev/null")
    runtime.cancelled.set()
    try:
        start = time.monotonic()
        with pytest.raises(runtime.Cancelled):
            ssh.run("192.0.2.1", "ab -n 100000 ...")
        assert time.monotonic() - start < 2
        assert ssh.run("192.0.2.1", "pkill -x ab", cancellable=False).stdout.strip() == "done"
    finally:
        runtime.cancelled.clear()


def test_a_thread_change_writes_the_modes_rendering_of_the_file_and_applies_it():
    """One writer per guest file: the runner ships what lbmodes/proxy.py rendered, it edits nothing."""
    import base64
    import subprocess

    from bench.runner import retune
    from lbmodes.proxy import haproxy_cfg

    spec, mode = lab_of({"webCount": 2, "benchThreads": [1, 2], "haproxyThreads": 1, "lbVcpus": 2})
    params = bench_spec("t", Configured(spec, mode, plan(spec)), refs("t", plan(spec)))
    assert sorted(params.retunes) == ["1", "2"] and params.lb_steps == (1, 2)
    ran: list[str] = []

    class FakeSsh:
        def run(self, address, command, **_):
            ran.append(command)
            out = "1\n2\n" if command.startswith("ps ") else ""
            return subprocess.CompletedProcess([], 0, out, "")

    retune(FakeSsh(), params, 2)
    written = base64.b64decode(ran[0].split()[1]).decode()
    assert written == haproxy_cfg(spec, plan(spec), 2) and "nbthread 2" in written and "cpu-map 1/1-2 0-1" in written
    assert ran[0].endswith("/etc/haproxy/haproxy.cfg")
    assert ran[1] == "sudo sh -c 'haproxy -c -q -f /etc/haproxy/haproxy.cfg && systemctl reload haproxy'"
    assert not any("sed " in c for c in ran)


def test_a_cancelled_benchmark_still_puts_the_lb_back_on_its_threads(monkeypatch):
    """Ctrl-C (or the engine gone) during a thread step: the runner's clean-up returns HAProxy to the
    deployed thread count, with commands that the cancel does not stop."""
    import base64
    import re
    import subprocess

    import runtime
    from bench import runner

    spec, mode = lab_of({"webCount": 2, "benchThreads": [1, 2], "haproxyThreads": 2, "lbVcpus": 2})
    params = bench_spec("t", Configured(spec, mode, plan(spec)), refs("t", plan(spec)))
    running = {"threads": 2}
    uncancellable: list[str] = []

    class FakeSsh:
        def run(self, address, command, cancellable=True, **_):
            if cancellable and runtime.cancelled.is_set():
                raise runtime.Cancelled("ssh")
            if not cancellable:
                uncancellable.append(command)
            if "base64 -d" in command:
                cfg = base64.b64decode(command.split()[1]).decode()
                running["threads"] = int(re.search(r"nbthread (\d+)", cfg).group(1))
            out = f"{running['threads']}\n" if command.startswith("ps ") else ""
            return subprocess.CompletedProcess([], 0, out, "")

    def cancelled_during_the_step(*_args, **_kw):
        runtime.cancelled.set()
        raise runtime.Cancelled("benchmark")

    monkeypatch.setattr(runner, "run_step", cancelled_during_the_step)
    try:
        with pytest.raises(runtime.Cancelled):
            runner._runs(params, FakeSsh(), None, Path("/nonexistent"), ["start"], None)
    finally:
        runtime.cancelled.clear()
    assert running["threads"] == 2  # back on what it was deployed with
    assert uncancellable and "nbthread 2" in base64.b64decode(uncancellable[0].split()[1]).decode()
    # IPVS has nothing to change: one row per point, no retunes.
    spec, mode = lab_of({"mode": "dsr", "webCount": 2, "benchThreads": [1, 2]})
    dsr = bench_spec("t", Configured(spec, mode, plan(spec)), refs("t", plan(spec)))
    assert dsr.lb_steps == (1,) and dsr.retunes == {} and dsr.lb_threads == 1


def test_stack_outputs_have_one_casing():
    """Result rows keep snake_case in result.json (the report reads it) and are camelCase as outputs."""
    from bench.report import as_outputs

    row = {"requests_per_second": 1.0, "requests_per_web": {"web01": 3}, "lb_bytes": {"rx_bytes": 1}, "flags": ["x_y"]}
    assert as_outputs([row]) == [
        {"requestsPerSecond": 1.0, "requestsPerWeb": {"web01": 3}, "lbBytes": {"rxBytes": 1}, "flags": ["x_y"]}
    ]


def test_balance_is_judged_against_round_robin():
    # The wrk run under IPVS: requests per web 17% off the mean, and nothing said so.
    flag = balance_flag("requests", {"web01": 3793, "web02": 2673})
    assert flag == (
        "unbalanced requests: web01 3,793 (+17%), web02 2,673 (-17%) against a mean of 3,233.0 (round robin: within +-5%)"
    )
    assert balance_flag("connections", {"web01": 1000, "web02": 1000}) is None
    assert balance_flag("connections", {f"web{i:02}": 40 for i in range(1, 26)} | {"web25": 38}) is None  # within 5%
    assert "web25 36" in (balance_flag("connections", {f"web{i:02}": 40 for i in range(1, 26)} | {"web25": 36}) or "")
    assert balance_flag("requests", {"web01": 3, "web02": 2}) is None  # at least +-1: round robin of an odd count
    assert "web02 0" in (balance_flag("requests", {"web01": 50, "web02": 0}) or "")  # a web that served nothing
    assert balance_flag("requests", {"web01": 7}) is None


def test_nginx_counters_take_off_the_readings_own_connection():
    from bench.counters import WebCounts

    assert WebCounts(1500, 1201).since(WebCounts(500, 200)) == WebCounts(1000, 1000)


READING = "cpu 8 4\ndrops 0 0\nlisten 0 0\nserved 5\naccepted 9\nopen 0\ntcp inuse 3 orphan 0 tw 2 alloc 5 mem 0\n"


class FakeReaders:
    """Every VM answers READING (bench/reader.sh's lines), for tests of the runner's other parts."""

    def __init__(self, ssh, vms, vip, port):
        self.vms = vms

    def __enter__(self):
        return self

    def __exit__(self, *_):
        pass

    def read_all(self):
        from bench.counters import parse_reading

        return {v.name: parse_reading(READING, v.role == "web") for v in self.vms}


class ScriptedSsh:
    """Answers the runner's commands from a script of (substring, stdout) or (substring, SshError)."""

    def __init__(self, answers):
        self.answers = answers

    def run(self, address, command, **_):
        import subprocess

        for part, answer in self.answers:
            if part in command:
                if isinstance(answer, Exception):
                    raise answer
                return subprocess.CompletedProcess([], 0, answer(address) if callable(answer) else answer, "")
        return subprocess.CompletedProcess([], 0, "", "")


def _dsr_plan(tmp_path):
    spec, mode = lab_of({"mode": "dsr", "webCount": 2})
    p = plan(spec)
    return bench_spec("t", Configured(spec, mode, p), refs("t", p)), p


def test_a_command_that_fails_on_a_vm_is_one_readable_error(tmp_path, monkeypatch):
    from bench import runner
    from bench.runner import run
    from runtime.ssh import SshError

    monkeypatch.setattr(runner.counters, "Readers", FakeReaders)
    params, p = _dsr_plan(tmp_path)
    web02 = str(next(g for g in p.guests if g.name == "web02").address)
    refused = SshError(
        "x",
        web02,
        "sudo grep -c ' /dummy_file ' /var/log/nginx/access.log || true",
        "SSH could not log in",
        "\nssh: connect to host 192.168.17.12 port 22: Connection refused\n",
    )
    ssh = ScriptedSsh(
        [("ip neigh", params.lb_mac), ("grep -c", lambda a: (_ for _ in ()).throw(refused) if a == web02 else "5")]
    )
    with pytest.raises(BenchmarkFailed) as failed:
        run(params, ssh, str(tmp_path))
    message = str(failed.value)
    assert message.startswith("benchmark, checking the paths through the VIP: on web02 (")
    assert "SSH could not log in" in message and "port 22: Connection refused" in message
    assert (next((tmp_path / "t").iterdir()) / "FAILED").read_text().startswith("BenchmarkFailed: benchmark, checking")


def test_a_web_that_lost_the_vip_is_named(tmp_path, monkeypatch):
    from bench import runner
    from bench.runner import run

    monkeypatch.setattr(runner.counters, "Readers", FakeReaders)
    params, p = _dsr_plan(tmp_path)
    web02 = str(next(g for g in p.guests if g.name == "web02").address)
    counts = {"n": 0}

    def served(address):
        if address == web02:
            return "7"  # never more: the requests sent its way time out
        counts["n"] += 1
        return str(counts["n"])

    curl_said = "curl: (28) Connection timed out after 5001 milliseconds\n" * 4
    ssh = ScriptedSsh([("ip neigh", params.lb_mac), ("grep -c", served), ("for i in", curl_said)])
    with pytest.raises(
        BenchmarkFailed, match=r"4 failed \(curl: \(28\) Connection timed out.*none reached web02: check"
    ):
        run(params, ssh, str(tmp_path))


def test_a_load_tool_that_did_not_run_is_named_with_its_last_lines(tmp_path, monkeypatch):
    from bench import clocks as clocks_module
    from bench import runner

    params, _ = _dsr_plan(tmp_path)
    monkeypatch.setattr(runner.probes, "check_paths", lambda *a, **k: None)
    monkeypatch.setattr(clocks_module, "measure", lambda ssh, address: clocks_module.Offset(0.0, 0.001))
    monkeypatch.setattr(
        runner.counters, "domain_bytes", lambda vms: {v.name: {"rx_bytes": 0, "tx_bytes": 0} for v in vms}
    )
    monkeypatch.setattr(runner.counters, "domain_cpu_ns", lambda vms: dict.fromkeys((v.name for v in vms), 0))
    monkeypatch.setattr(runner.counters, "Readers", FakeReaders)
    ssh = ScriptedSsh(
        [
            (
                "echo l2dsr-start",
                "l2dsr-start 1\nbash: line 1: ab: command not found\nl2dsr-latency-us\nl2dsr-latency-end\n",
            ),
        ]
    )
    with pytest.raises(BenchmarkFailed) as failed:
        runner.run(params, ssh, str(tmp_path))
    message = str(failed.value)
    assert message.startswith("benchmark, run 1 of 1 (concurrency 1000, repeat 1): client01: ab (")
    assert "did not report a result: ab did not finish: l2dsr-start 1 | bash: line 1: ab: command not found" in message


def test_the_benchmarks_cost_follows_the_mode_the_tool_and_the_host():
    from bench.cost import estimate

    values = {
        "webCount": 2,
        "clientCount": 1,
        **{f"{role}Vcpus": 1 for role in ("client", "lb", "web")},
        "haproxyThreads": 1,
        "benchConcurrency": [20],
        "benchRequests": [20000],
        "benchRepeats": 2,
    }
    proxy = estimate(*lab_of(values), "qemu")
    dsr = estimate(*lab_of({**values, "mode": "dsr"}), "qemu")
    assert (proxy.runs, proxy.bound_by, proxy.requests_per_second) == (2, "the LB", 200.0)
    assert (dsr.bound_by, dsr.requests_per_second) == ("the clients", 280.0)  # IPVS is cheap: one ab sets the pace
    assert proxy.minutes == pytest.approx((20 + 2 * (12 + 200 / 200 + 20000 / 200)) / 60)
    assert estimate(*lab_of(values), "kvm").minutes < proxy.minutes / 5
    # wrk runs for its duration, whatever the rate: the same minutes under both modes
    wrk = {**values, "benchTool": "wrk"}
    assert estimate(*lab_of(wrk), "qemu").minutes == estimate(*lab_of({**wrk, "mode": "dsr"}), "qemu").minutes


def test_clients_wait_for_one_moment_of_the_hosts_clock_on_their_own():
    load = Load("http://192.168.16.100/dummy_file", 10, 1000, False)
    command = TOOLS["ab"].run(load, 1_795_988_824_500_000_000)
    assert command.startswith("while [ $(date +%s%N) -lt 1795988824500000000 ]; do sleep 0.005; done; echo l2dsr-start")
    assert TOOLS["ab"].run(load).startswith("echo l2dsr-start $(date +%s%N); ulimit -n 1048576; ab -c 10 -n 1000 -g ")


def test_a_steps_flags_are_each_kind_once_with_the_runs_that_raised_them():
    from bench.matrix import repeated_flags

    runs = [
        ["drops on web01: listen_drops 42, listen_overflows 42", "client CPU saturated: client01 100%"],
        ["drops on web01: listen_drops 50, listen_overflows 50", "drops on web02: rx_dropped 3"],
    ]
    assert repeated_flags(runs) == [
        "client CPU saturated: client01 100% (1 of 2 runs)",
        "drops on web01: listen_drops 50, listen_overflows 50 (2 of 2 runs)",
        "drops on web02: rx_dropped 3 (1 of 2 runs)",
    ]
    assert repeated_flags([["connections still open: lb (3)"]]) == ["connections still open: lb (3)"]


def test_clients_output_without_latency_data_is_one_readable_error(tmp_path, monkeypatch):
    from bench import clocks as clocks_module
    from bench import runner

    params, _ = _dsr_plan(tmp_path)
    monkeypatch.setattr(runner.probes, "check_paths", lambda *a, **k: None)
    monkeypatch.setattr(clocks_module, "measure", lambda ssh, address: clocks_module.Offset(0.0, 0.001))
    monkeypatch.setattr(
        runner.counters, "domain_bytes", lambda vms: {v.name: {"rx_bytes": 0, "tx_bytes": 0} for v in vms}
    )
    monkeypatch.setattr(runner.counters, "domain_cpu_ns", lambda vms: dict.fromkeys((v.name for v in vms), 0))
    monkeypatch.setattr(runner.counters, "Readers", FakeReaders)
    report = (TWO / "ab.client01.txt").read_text().split(HISTOGRAM_START)[0]  # awk missing: no histogram
    ssh = ScriptedSsh(
        [
            ("echo l2dsr-start", report),
        ]
    )
    with pytest.raises(BenchmarkFailed) as failed:
        runner.run(params, ssh, str(tmp_path))
    assert str(failed.value).startswith("benchmark, run 1 of 1 (concurrency 1000, repeat 1): the clients' outputs hold")
    assert "raw output in " in str(failed.value)


def test_a_run_without_its_start_mark_cannot_be_placed():
    text = (TWO / "ab.client01.txt").read_text()
    assert clock_start(text) == int(text.splitlines()[0].split()[1])
    with pytest.raises(ParseError, match="l2dsr-start"):
        clock_start(text.split("\n", 1)[1])


DOMSTATS = """Domain: 'l2dsr-t-lb'
  net.count=1
  net.0.name=vnet2
  net.0.rx.bytes=123456
  net.0.rx.pkts=100
  net.0.rx.drop=0
  net.0.tx.bytes=654321
  net.0.tx.pkts=90

Domain: 'l2dsr-t-web01'
  net.count=2
  net.0.name=vnet3
  net.0.rx.bytes=10
  net.0.tx.bytes=20
  net.1.name=vnet4
  net.1.rx.bytes=1
  net.1.tx.bytes=2
"""


def test_domain_bytes_are_summed_over_a_domains_interfaces():
    from bench.counters import parse_domstats

    assert parse_domstats(DOMSTATS) == {
        "l2dsr-t-lb": {"rx_bytes": 123456, "tx_bytes": 654321},
        "l2dsr-t-web01": {"rx_bytes": 11, "tx_bytes": 22},
    }


def test_a_domain_libvirt_did_not_count_is_an_error(monkeypatch):
    from bench import counters
    from virt.virsh import VirshError

    monkeypatch.setattr(counters.Virsh, "run", lambda self, *args, **kw: DOMSTATS)
    lb = VmRef("lb", "lb", "172.16.0.10", "l2dsr-t-lb", "")
    gone = VmRef("web02", "web", "172.16.0.102", "l2dsr-t-web02", "")
    assert counters.domain_bytes([lb])["lb"]["tx_bytes"] == 654321
    with pytest.raises(VirshError, match="no interface counters for web02"):
        counters.domain_bytes([lb, gone])


DOMSTATS_CPU = """Domain: 'l2dsr-t-lb'
  cpu.time=5123456789
  cpu.user=3000000000
  cpu.system=1000000000

Domain: 'l2dsr-t-web01'
  cpu.time=42
"""


def test_each_domains_cpu_time_is_the_hypervisors(monkeypatch):
    from bench import counters
    from virt.virsh import VirshError

    asked = []
    monkeypatch.setattr(counters.Virsh, "run", lambda self, *args, **kw: asked.append(args) or DOMSTATS_CPU)
    lb = VmRef("lb", "lb", "172.16.0.10", "l2dsr-t-lb", "")
    web = VmRef("web01", "web", "172.16.0.101", "l2dsr-t-web01", "")
    assert counters.domain_cpu_ns([lb, web]) == {"lb": 5123456789, "web01": 42}
    assert asked[0][:2] == ("domstats", "--cpu-total")
    with pytest.raises(VirshError, match="no CPU time for web02"):
        counters.domain_cpu_ns([lb, VmRef("web02", "web", "172.16.0.102", "l2dsr-t-web02", "")])


def _reader(tmp_path, role: str, proc: str = "/proc", drops: tuple[int, int] = (0, 0)):
    """bench/reader.sh run by bash here, as on a guest (/proc moved into tmp_path where asked). Its
    eth0 is always one in tmp_path with these rx/tx drops: the tests also run in the lab's
    namespace, which has no eth0."""
    import subprocess

    from bench.counters import READER

    stats = tmp_path / "net" / "eth0" / "statistics"
    stats.mkdir(parents=True)
    (stats / "rx_dropped").write_text(f"{drops[0]}\n")
    (stats / "tx_dropped").write_text(f"{drops[1]}\n")
    script = tmp_path / "reader.sh"
    log = tmp_path / "access.log"
    log.write_text('1.2.3.4 - - [x] "GET /dummy_file HTTP/1.0" 200 5120\n' * 2)
    script.write_text(
        READER.replace("/proc/", f"{proc}/")
        .replace("/sys/class/net/", f"{tmp_path / 'net'}/")
        .replace("/var/log/nginx/access.log", str(log))
    )
    vip = "6410A8C0:0050" if role == "client" else ""
    return subprocess.Popen(
        ["bash", str(script), vip, "1" if role == "web" else ""],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_the_reader_answers_each_request_with_the_guests_counters(tmp_path):
    """bench/reader.sh on files shaped as a guest's (/proc/stat, eth0's drops, /proc/net/netstat,
    /proc/net/tcp, /proc/net/sockstat): a client's reading, twice, then `quit` ends it."""
    from bench.counters import parse_reading
    from bench.probes import unsettled

    proc = tmp_path / "proc"
    (proc / "net").mkdir(parents=True)
    (proc / "stat").write_text("cpu  100 2 30 400 5 6 7 8 0 0\ncpu0 100 2 30 400 5 6 7 8 0 0\n")
    (proc / "net" / "netstat").write_text(
        "TcpExt: SyncookiesSent ListenOverflows ListenDrops TCPTimeouts\nTcpExt: 0 3 4 9\nIpExt: InNoRoutes\nIpExt: 0\n"
    )
    (proc / "net" / "tcp").write_text(
        "  sl  local_address rem_address   st\n"
        "   0: 0B10A8C0:D2F4 6410A8C0:0050 01 00000000:00000000\n"
        "   1: 0B10A8C0:D2F6 6410A8C0:0050 06 00000000:00000000\n"
    )
    (proc / "net" / "sockstat").write_text("sockets: used 58\nTCP: inuse 3 orphan 1 tw 2 alloc 5 mem 0\n")
    reader = _reader(tmp_path, "client", str(proc), drops=(11, 12))
    out, err = reader.communicate("read\nread\nquit\n", timeout=30)
    assert reader.returncode == 0 and not err, err
    first, second, rest = out.split("@@end\n")
    assert first == second and rest == ""
    r = parse_reading(first, web=False)
    assert r.counters() == {
        "cpu_total": 100 + 2 + 30 + 400 + 5 + 6 + 7 + 8,
        "cpu_idle": 405,
        "rx_dropped": 11,
        "tx_dropped": 12,
        "listen_drops": 4,
        "listen_overflows": 3,
    }
    assert unsettled(r.lines) == 1 + 1  # one established to the VIP (not the one in TIME_WAIT), one orphan


def test_a_web_that_prints_no_nginx_counts_is_named_with_what_it_printed(tmp_path, monkeypatch):
    """A web's reader that cannot give nginx's counts (here, its access log has 2 requests but no
    nginx answers at 127.0.0.1:80) fails the reading with one error naming the web and what it printed."""
    from bench import counters
    from runtime.ssh import SshError

    web = VmRef("web01", "web", "172.16.0.101", "d", "")
    readers = counters.Readers(None, [web], "192.168.16.100", 80)  # type: ignore[arg-type]
    monkeypatch.setattr(readers, "command", lambda vm: "")
    readers.procs = {"web01": _reader(tmp_path, "web")}
    with pytest.raises(SshError, match=r"did not print its counters \(no accepted counts\); is nginx running") as e:
        readers.read(web)
    assert "cpu " in e.value.output and "served 0\n" in e.value.output  # the log's lines before the reader started
    readers.__exit__()


def test_the_reader_counts_the_requests_a_web_served_since_it_started_across_a_log_rotation(tmp_path):
    """A web's served count comes from the access log's new lines (no process per reading): lines
    before the reader started are not counted, a line cut short is counted once when it is whole,
    and when the log is rotated the rest of the old file is read, then the new one."""
    import threading

    log = tmp_path / "access.log"
    reader = _reader(tmp_path, "web")  # the log holds 2 requests already
    timer = threading.Timer(60, reader.kill)  # a reader that hangs fails the test, not the run
    timer.daemon = True
    timer.start()
    dummy = '10.0.0.1 - - [x] "GET /dummy_file HTTP/1.0" 200 5120\n'
    other = '10.0.0.1 - - [x] "GET /dummy_file?l2dsr-health-check HTTP/1.0" 200 5120\n'

    def served() -> int:
        assert reader.stdin is not None and reader.stdout is not None
        reader.stdin.write("read\n")
        reader.stdin.flush()
        found = None
        while True:
            line = reader.stdout.readline()
            assert line, "the reader ended"
            if line.startswith("served "):
                found = int(line.split()[1])
            if line.strip() == "@@end":
                return found

    assert served() == 0
    with log.open("a") as f:
        f.write(dummy + other + dummy + dummy[:20])  # the last one cut short: nginx is writing it
    assert served() == 2
    with log.open("a") as f:
        f.write(dummy[20:])
    assert served() == 3
    log.rename(tmp_path / "access.log.1")
    with (tmp_path / "access.log.1").open("a") as f:
        f.write(dummy)  # written before nginx reopened its log
    log.write_text(dummy + dummy)
    assert served() == 6
    reader.communicate("quit\n", timeout=20)
    timer.cancel()
    assert reader.returncode == 0
