"""Parsing, combining and judging benchmark runs: real output captured from the lab, known inputs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

import lbmodes
from bench.judge import mode_problem, response_share
from bench.loadtools.ab import parse as parse_ab
from bench.loadtools.wrk import parse as parse_wrk
from bench.parse import ParseError, RunResult, combine
from bench.report import results_table
from bench.runner import BenchSpec
from components.benchmark import bench_spec
from lab.addressing import domain_name, plan
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


def test_parse_ab_says_when_ab_did_not_finish():
    with pytest.raises(ParseError, match="ab did not finish: .*Connection refused"):
        parse_ab("Benchmarking 192.168.16.100 (be patient)\napr_socket_recv: Connection refused (111)\n")


def _run(rps: float, c: int, n: int, p99: float) -> RunResult:
    return RunResult("ab", c, n, 0, 0, rps, c * 1000 / rps, 1000 / rps, 100.0, 5120, n / rps, {"p50": 1.0, "p99": p99})


def test_combine_sums_like_the_seed():
    combined = combine([_run(10000, 30000, 90000, 12), _run(5000, 30000, 90000, 30)])
    assert combined["clients"] == 2
    assert (combined["concurrency"], combined["total_requests"]) == (60000, 180000)
    assert combined["requests_per_second"] == 15000
    assert combined["latency_ms"] == round(1000 / 15000, 3)
    assert combined["latency_percentiles_ms"]["p99"] == 30


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


def test_results_table_has_the_seeds_columns():
    row = {
        "mode": "dsr",
        "lb_threads": 1.0,
        "concurrency": 20.0,
        "total_requests": 2000.0,
        "file_size_bytes": 5120.0,
        "requests_per_second": 337.32,
        "latency_ms": 2.965,
        "failed_requests": 0.0,
        "non_2xx_responses": 0.0,
    }
    table = results_table([row]).splitlines()
    assert table[0].startswith(
        "| Mode | Thread | Concurrency | Total Requests | File Size | Requests/sec | Latency (ms)"
    )
    assert table[2] == "| dsr | 1 | 20 | 2,000 | 5 KiB | 337.32 | 2.965 | 0 | - |"


def test_results_table_shows_the_spread_of_repeats_and_flags():
    row = {
        "mode": "proxy",
        "lb_threads": 4,
        "concurrency": 30000,
        "total_requests": 90000,
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
        "| proxy | 4 | 30,000 | 90,000 | 5 KiB | 13,258.52 (13,000.00-13,300.50) | 0.084 (0.080-0.090) | 0 | "
        "client CPU saturated: client01 99% |"
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
    built = bench_spec("lab", spec, mode_, p, refs("lab", p))
    stored = floats(props_of(built))
    assert stored["concurrency"] == [10.0, 20.0]
    back = read_props(BenchSpec, stored)
    assert back == built
    assert all(isinstance(v, int) for v in back.concurrency) and back.shares == mode_.shares


def _summary(mode: str, threads: int, conc: int, rps: float, bpr: float) -> dict:
    return {
        "mode": mode,
        "tool": "ab",
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
        "failed_requests": 0,
        "non_2xx_responses": 0,
        "lb_response_share": 1.0,
        "lb_bytes_per_request": bpr,
        "flags": [],
    }


def test_report_from_saved_results_has_tables_ratios_and_real_pngs(tmp_path):
    import json

    from bench.report import load_results, write_report

    proxy = {
        "mode": "proxy",
        "tool": "ab",
        "raw_dir": "results/proxy/x",
        "summary": [_summary("proxy", t, c, 1000 * t + c / 10, 6200) for t in (1, 2) for c in (10, 20)],
    }
    dsr = {
        "mode": "dsr",
        "tool": "ab",
        "raw_dir": "results/dsr/y",
        "summary": [_summary("dsr", 1, c, 1500 + c / 10, 560) for c in (10, 20)],
    }
    for name, res in (("proxy", proxy), ("dsr", dsr)):
        (tmp_path / name / "20261126T000000Z").mkdir(parents=True)
        (tmp_path / name / "20261126T000000Z" / "result.json").write_text(json.dumps(res))
    results = load_results([tmp_path / "proxy", tmp_path / "dsr"])
    report = write_report(results, tmp_path / "report")
    text = report.read_text()
    assert "## proxy (ab)" in text and "## dsr (ab)" in text and "## Each mode against proxy" in text
    assert "| 10 | 1 | 1,001.00 | dsr | 1,501.00 | 1.50x | 6,200 | 560 |" in text
    for png in ("rps.png", "latency.png"):
        data = (tmp_path / "report" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
        assert f"![{png[:-4]}]({png})" in text


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
    from bench.probes import settled_command, unsettled

    assert "dst 192.168.16.100:80" in settled_command("192.168.16.100", 80)
    assert unsettled("0\n6 (estab 1, closed 0, orphaned 0, timewait 0)") == 0
    assert unsettled("3\n9 (estab 4, closed 0, orphaned 0, timewait 0)") == 3
    assert unsettled("0\n9 (estab 1, closed 2, orphaned 2, timewait 2)") == 2


def test_parse_wrk_real_run_on_a_lab_guest():
    r = parse_wrk((DATA / "wrk-c10-3s.txt").read_text(), concurrency=10, document_length=5120)
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
    r = parse_wrk(text, 10, 5120)
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
    params = bench_spec("t", spec, mode, plan(spec), refs("t", plan(spec)))
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
    # IPVS has nothing to change: one row per point, no retunes.
    spec, mode = lab_of({"mode": "dsr", "webCount": 2, "benchThreads": [1, 2]})
    dsr = bench_spec("t", spec, mode, plan(spec), refs("t", plan(spec)))
    assert dsr.lb_steps == (1,) and dsr.retunes == {} and dsr.lb_threads == 1


def test_stack_outputs_have_one_casing():
    """Result rows keep snake_case in result.json (the report reads it) and are camelCase as outputs."""
    from bench.report import as_outputs

    row = {"requests_per_second": 1.0, "requests_per_web": {"web01": 3}, "lb_bytes": {"rx_bytes": 1}, "flags": ["x_y"]}
    assert as_outputs([row]) == [
        {"requestsPerSecond": 1.0, "requestsPerWeb": {"web01": 3}, "lbBytes": {"rxBytes": 1}, "flags": ["x_y"]}
    ]
