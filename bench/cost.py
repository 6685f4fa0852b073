"""What a benchmark will cost, told at preview: its runs and their expected duration, from the
matrix, the mode's LB rate, the webs and clients it has and the host's domain type. Pure.

A rough estimate by design (it decides whether to refuse, not a result): the slowest of the LB, the
webs and the clients sets the rate, each from per-vCPU rates measured on the lab stack under
software emulation (lbmodes/ for the LB, here for the webs and tools); under KVM everything is
taken as KVM_SPEEDUP times faster (an assumption, not measured here: this machine runs no KVM
guest). A tool that runs for a duration (wrk) takes it whatever the rate (its `duration_s`).
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.matrix import split, steps
from lab.spec import PROJECT, LabSpec, Problem
from lbmodes import Mode
from loadtools import OPEN_LOOP, TOOLS

WEB_RATE_PER_VCPU = 220.0  # nginx, 5 KiB: 162 req/s at 74% of one vCPU (dsr, two clients, 2 webs)
KVM_SPEEDUP = 10.0
STEP_OVERHEAD_S = {"qemu": 12.0, "kvm": 3.0}  # settle, warm-up, clocks and counters over SSH, per run
PATH_CHECK_S = {"qemu": 20.0, "kvm": 5.0}  # the checks before the first run


TRIAL_OVERHEAD_S = {"qemu": 15.0, "kvm": 4.0}  # a search trial's settle, clocks, counters and results over SSH


@dataclass(frozen=True)
class Cost:
    runs: int
    minutes: float  # everything: the steps and, at most, the search
    requests_per_second: float  # the estimated rate of the slowest step
    bound_by: str  # "the LB", "the webs" or "the clients"
    search_points: int = 0  # l2dsr:benchSearch: tests x sizes x LB threads
    search_minutes: float = 0.0  # at most: every point using its whole trial budget
    search_start_rps: float = 0.0  # the search's first rate: the slowest step's, or what the clients can offer

    def explain(self) -> str:
        search = (
            f"; a capacity search of {self.search_points} point(s), at most {self.search_minutes:.0f} min of it"
            if self.search_points
            else ""
        )
        return (
            f"{self.runs} run(s), about {self.minutes:.0f} min at an estimated {self.requests_per_second:,.0f} "
            f"req/s or more (bound by {self.bound_by}){search}"
        )


def search_seconds(spec: LabSpec, mode: Mode, domain_type: str) -> tuple[int, float]:
    """(points, seconds at most) of the capacity search: each point's whole trial budget, one trial of
    it as long as the confirmation, and the trial at half its capacity."""
    search = spec.bench_search
    if search is None:
        return 0, 0.0
    kind = "kvm" if domain_type == "kvm" else "qemu"
    points = len(search.tests) * len(search.file_sizes_kib) * len(mode.lb_steps(spec))
    # the budget's trials, one of them the confirmation, and the trial at half the rate found
    per_point = (search.max_trials + 1) * TRIAL_OVERHEAD_S[kind] + search.max_trials * search.trial_s + search.confirm_s
    return points, points * per_point


def rate(spec: LabSpec, mode: Mode, domain_type: str, threads: int) -> tuple[float, str]:
    speed = KVM_SPEEDUP if domain_type == "kvm" else 1.0
    limits = {
        "the LB": mode.lb_rate(spec, threads),
        "the webs": WEB_RATE_PER_VCPU * spec.vcpus["web"] * spec.web_count,
        "the clients": TOOLS[spec.bench_tool].rate_per_vcpu * spec.vcpus["client"] * spec.client_count,
    }
    bound = min(limits, key=lambda k: limits[k])
    return limits[bound] * speed, bound


def estimate(spec: LabSpec, mode: Mode, domain_type: str) -> Cost:
    kind = "kvm" if domain_type == "kvm" else "qemu"
    matrix = steps(mode.lb_steps(spec), spec.bench_concurrency, spec.bench_requests, spec.bench_repeats)
    seconds, slowest, bound = PATH_CHECK_S[kind], float("inf"), ""
    for step in matrix:
        r, b = rate(spec, mode, domain_type, step.threads)
        if r < slowest:
            slowest, bound = r, b
        duration_s = TOOLS[spec.bench_tool].duration_s
        if duration_s is not None:
            run: float = max(duration_s(n) for n in split(step.requests, spec.client_count))
            warmup = float(duration_s(200))
        else:
            run, warmup = step.requests / r, min(step.requests, 200) / r
        seconds += STEP_OVERHEAD_S[kind] + warmup + run
    points, searching = search_seconds(spec, mode, domain_type)
    speed = KVM_SPEEDUP if domain_type == "kvm" else 1.0
    offer = min(t.rate_per_vcpu for t in OPEN_LOOP.values()) * spec.vcpus["client"] * spec.client_count * speed
    start = min(slowest, offer) if points else 0.0
    return Cost(len(matrix), (seconds + searching) / 60, slowest, bound, points, searching / 60, start)


def cost_problems(spec: LabSpec, mode: Mode, domain_type: str) -> tuple[Cost, list[Problem]]:
    cost = estimate(spec, mode, domain_type)
    if cost.minutes <= spec.bench_max_minutes:
        return cost, []
    return cost, [
        Problem(
            "benchMaxMinutes",
            f"the benchmark would take {cost.explain()}, above {spec.bench_max_minutes} min; lower "
            f"benchRequests, benchRepeats or the steps of benchConcurrency/benchThreads"
            + (", the search's tests, sizes, trials or their length" if cost.search_points else "")
            + ", or set "
            f"{PROJECT}:benchMaxMinutes to {int(cost.minutes) + 1} or more",
        )
    ]
