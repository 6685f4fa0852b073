"""Configuration and address plan: the seed's defaults, the lab stack, and every bad-config message."""

from __future__ import annotations

import ipaddress

import pytest
import yaml

from lab.addressing import plan
from lab.spec import ConfigError
from loadtools import TOOLS
from tests.conftest import lab_of, spec_of
from tests.program import PROJECT_DIR


def lab_stack_values() -> dict:
    return yaml.safe_load((PROJECT_DIR / "Pulumi.lab.yaml").read_text())["config"]


def test_defaults_are_the_seeds_values():
    spec = spec_of()
    p = plan(spec)
    assert spec.mode == "proxy"
    assert spec.web_count == 25
    assert str(spec.vip) == "192.168.16.100"
    assert [str(w.address) for w in p.webs] == [f"172.16.0.{101 + i}" for i in range(25)]
    assert [w.name for w in p.webs][:2] == ["web01", "web02"] and p.webs[-1].name == "web25"
    assert spec.haproxy_threads == 4
    assert (spec.ipvs_upper_threshold, spec.ipvs_lower_threshold) == (35000, 35000)
    assert (spec.bench_tool, spec.bench_concurrency, spec.bench_requests) == ("ab", (1000,), (2000,))
    assert (spec.bench_threads, spec.bench_repeats, spec.bench_file_size_kib) == ((), 1, 5)
    assert spec.https is False


def test_lab_stack_leaves_memory_headroom_over_every_estimate():
    from lab.memory import estimate

    spec, mode = lab_of(lab_stack_values())
    client = TOOLS[spec.bench_tool].client_memory(spec.per_client_concurrency)
    for role in ("client", "lb", "web"):
        assert spec.memory_mib[role] >= 1.25 * estimate(role, spec, mode.lb_memory(spec), client).mib, role


def test_memory_estimate_follows_the_configuration():
    from lab.memory import estimate, nginx_workers

    def mib(role: str, values: dict) -> int:
        spec, mode = lab_of(values)
        client = TOOLS[spec.bench_tool].client_memory(spec.per_client_concurrency)
        return estimate(role, spec, mode.lb_memory(spec), client).mib

    assert nginx_workers() == (2, 200000)  # the seed's nginx.conf, as rendered
    small = {"benchConcurrency": 20, "benchRequests": 20}
    assert mib("client", {}) > mib("client", small)  # more connections per client
    assert mib("lb", {}) > mib("lb", small)
    assert mib("lb", {"mode": "dsr"}) < mib("lb", {})  # no proxy process: the mode's own figures
    assert mib("lb", {"benchThreads": "[1, 8]"}) > mib("lb", {})


def test_lab_stack_is_the_small_lab():
    spec = spec_of(lab_stack_values())
    p = plan(spec)
    assert [h.name for h in p.guests] == ["client01", "lb", "web01", "web02"]
    assert sum(spec.memory_mib[h.role] for h in p.guests) <= 2048  # guests' memory for one small host


def test_lb_holds_the_vip_and_both_subnets():
    p = plan(spec_of())
    assert p.lb.address == ipaddress.IPv4Address("192.168.16.2")
    assert [str(i) for i in p.lb.extra] == ["172.16.0.2/24", "192.168.16.100/32"]
    assert str(p.host_front) == "192.168.16.1" and str(p.host_server) == "172.16.0.1"


def test_values_arrive_as_strings_from_pulumi_config():
    spec = spec_of({"l2dsr:webCount": "3", "https": "true", "mode": "dsr"})
    assert spec.web_count == 3 and spec.https is True and spec.mode == "dsr"


def test_matrix_values_expand_like_the_seeds_table():
    spec = spec_of(
        {
            "benchConcurrency": "[30000, 60000]",
            "benchRequests": "[90000]",
            "benchThreads": "[1, 2, 4, 8]",
            "clientCount": 60,  # ab runs 1000 connections per client in the seed (-c 1000)
        }
    )
    assert spec.bench_concurrency == (30000, 60000) and spec.bench_requests == (90000, 90000)
    assert spec.bench_threads == (1, 2, 4, 8)


def test_all_problems_are_reported_at_once():
    with pytest.raises(ConfigError) as err:
        spec_of({"mode": "maglev", "webCount": 500, "webMemoryMiB": 1})
    keys = sorted(p.key for p in err.value.problems)
    assert keys == ["mode", "webCount", "webMemoryMiB"]
    assert str(err.value).startswith("invalid l2dsr configuration (3 problem(s))")


def test_the_ready_seed_stack_is_the_seeds_table():
    spec = spec_of(yaml.safe_load((PROJECT_DIR / "Pulumi.seed.yaml").read_text())["config"])
    assert spec.web_count == 25 and spec.bench_threads == (1, 2, 4, 8)
    # The seed's table: concurrency 30,000..200,000 with three requests per connection.
    assert spec.bench_concurrency == (30000, 60000, 90000, 150000, 200000)
    assert spec.bench_requests == tuple(3 * c for c in spec.bench_concurrency)
