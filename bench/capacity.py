"""Capacity, not a point: the highest offered rate a mode sustains under pass criteria, found by a
search over trials of open-loop load (RFC 2544's throughput, RFC 9411's criteria for L4-L7 devices,
TRex's NDR/PDR). Pure: a trial is a function the caller runs on the lab (or a simulated device in the
tests); this module judges each trial, chooses the next rate, and says what bound the result.

The search, per point (mode x test x size x threads):
- a first trial at the upper guess; while it passes, the guess doubles (up to the budget);
- then bisection between the highest rate that passed and the lowest that failed, until they are
  within `precision` of each other (relative to the failed one) or the budget is spent;
- the rate found is confirmed by one longer trial; if that fails, the short trials overstated what
  is sustained, and the search goes on below it with trials as long as the confirmation.
Only a rate whose trial passed is ever reported. A trial a client could not drive (its CPU saturated,
or it fell behind its schedule) is invalid: it says nothing of the LB, so it does not pass, and the rate
found below it is bound by the clients, said as such (never counted as the LB's limit).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Criteria", "Search", "SearchResult", "Trial", "Verdict", "bound_of", "hosts_busy", "judge", "search"]


@dataclass(frozen=True)
class Criteria:
    """What a trial must meet to pass (l2dsr:benchSearch...)."""

    max_failed_pct: float = 0.0  # failed requests and connection errors, % of offered: 0 = NDR, 0.1 = PDR
    min_achieved_ratio: float = 0.99  # completed at least this share of the offered rate
    p99_ms: float = 0.0  # the p99 (from the intended send time) at most this; 0: not a criterion


@dataclass(frozen=True)
class Trial:
    """What one trial measured, over every client, merged."""

    offered_rps: float  # the total rate the clients were told to send
    seconds: float
    sent: int  # requests the schedule called for
    completed: int  # answered with a 2xx
    failed: int  # errors, timeouts, non-2xx
    p50_ms: float
    p99_ms: float
    p999_ms: float
    cpu: dict[str, float] = field(default_factory=dict)  # VM name -> share of its vCPUs busy (0..1)
    roles: dict[str, str] = field(default_factory=dict)  # VM name -> role (client, lb, web)
    # libvirt host -> share of its CPUs the lab's domains used over the trial's reading window (0..1);
    # near 1 every VM on it waits for the host (emulation on a small host), whatever each guest reports
    hosts_busy: dict[str, float] = field(default_factory=dict)
    flags: tuple[str, ...] = ()  # what the run itself noticed (bench/judge.py), besides the criteria
    invalid: tuple[str, ...] = ()  # why the trial says nothing of the LB (a client saturated or behind)

    @property
    def achieved_rps(self) -> float:
        return self.completed / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class Verdict:
    passed: bool
    failed_criteria: tuple[str, ...]  # each says which criterion and by how much
    invalid: tuple[str, ...]


def judge(trial: Trial, criteria: Criteria) -> Verdict:
    """Every criterion the trial missed, and whether it is valid at all."""
    missed = []
    offered = max(trial.sent, 1)
    failed_pct = 100.0 * trial.failed / offered
    if failed_pct > criteria.max_failed_pct:
        missed.append(f"failed {failed_pct:.3g}% > {criteria.max_failed_pct:g}%")
    if trial.achieved_rps < criteria.min_achieved_ratio * trial.offered_rps:
        missed.append(
            f"achieved {_rps(trial.achieved_rps)}/s < {criteria.min_achieved_ratio:.0%} of {_rps(trial.offered_rps)}/s"
        )
    if criteria.p99_ms and trial.p99_ms > criteria.p99_ms:
        missed.append(f"p99 {trial.p99_ms:.1f} ms > {criteria.p99_ms:g} ms")
    return Verdict(not missed and not trial.invalid, tuple(missed), trial.invalid)


@dataclass(frozen=True)
class Search:
    """How a point is searched (l2dsr:benchSearch...)."""

    criteria: Criteria
    start_rps: float  # the first guess (preview's estimate of what the lab can carry)
    floor_rps: float  # below this the point is reported as under the floor, not searched further
    precision: float = 0.05  # stop when the passing and failing rates are this close (relative)
    max_trials: int = 12  # every trial counts, the confirmation too
    trial_s: float = 10.0
    confirm_s: float = 30.0


@dataclass
class SearchResult:
    rate_rps: float  # the highest offered rate whose trial passed (and was confirmed, if `confirmed`); 0: none
    confirmed: bool
    trials: list[tuple[Trial, Verdict]]
    stopped: str  # why the search ended: "precision", "trial budget" or "floor"
    failed_rps: float = 0.0  # the lowest rate that failed above rate_rps (0: none failed)

    @property
    def passing(self) -> Trial | None:
        found = [t for t, v in self.trials if v.passed and t.offered_rps == self.rate_rps]
        return found[-1] if found else None


def search(run_trial: Callable[[float, float], Trial], how: Search) -> SearchResult:
    """The highest rate that passes `how.criteria`; `run_trial(rate, seconds)` runs one trial."""
    trials: list[tuple[Trial, Verdict]] = []
    low, high = 0.0, 0.0  # the highest rate that passed, the lowest that failed (0: none yet)
    length = how.trial_s  # the confirmation's once a short trial has overstated what is sustained

    def attempt(rate: float, seconds: float) -> Verdict:
        trial = run_trial(rate, seconds)
        verdict = judge(trial, how.criteria)
        trials.append((trial, verdict))
        return verdict

    def spent() -> bool:
        return len(trials) >= how.max_trials

    def result(stopped: str, confirmed: bool = False) -> SearchResult:
        rate = low
        if not low:  # a confirmation failed and no long trial has passed since: the highest rate a short
            # trial passed below every failure, unconfirmed (0 only when no trial passed at all)
            rate = max((t.offered_rps for t, v in trials if v.passed and t.offered_rps < high), default=0.0)
        return SearchResult(rate, confirmed, trials, stopped, high)

    rate = how.start_rps
    while not (low and high):  # a bracket: up while the guess passes, down while it fails
        if spent():
            return result("trial budget")
        verdict = attempt(rate, length)
        if verdict.passed:
            low, rate = rate, rate * 2
        else:
            high, rate = rate, rate / 2
            if not low and rate < how.floor_rps:
                return result("floor")
    while True:
        while high - low > how.precision * high:  # bisection
            if spent():
                return result("trial budget")
            rate = (low + high) / 2
            verdict = attempt(rate, length)
            low, high = (rate, high) if verdict.passed else (low, rate)
        if length == how.confirm_s:  # every trial since the failed confirmation was a long one
            return result("precision", confirmed=True)
        if spent():
            return result("trial budget")
        if attempt(low, how.confirm_s).passed:
            return result("precision", confirmed=True)
        # Not sustained over the longer trial: the short trials overstate it, so the search goes on
        # below with trials as long as the confirmation, from the highest rate a long trial passed.
        length, high = how.confirm_s, low
        low = max(
            (t.offered_rps for t, v in trials if v.passed and t.seconds == length and t.offered_rps < high), default=0.0
        )
        while not low:
            rate = high / 2
            if rate < how.floor_rps:
                return result("floor")
            if spent():
                return result("trial budget")
            verdict = attempt(rate, length)
            low, high = (rate, high) if verdict.passed else (low, rate)


def _rps(rate: float) -> str:
    """Three significant figures below 100/s (9.6 < 99% of 10.2, not 10 < 99% of 10), whole above."""
    return f"{rate:,.0f}" if rate >= 100 else f"{rate:.3g}"


ROLE_BOUNDS = {"lb": "the LB's CPU", "web": "the webs' CPU", "client": "a client's CPU"}
BUSY = 0.9  # a VM whose vCPUs were this busy is what bound the rate


def hosts_busy(
    cpu_s: dict[str, float], window_s: float, host_of: dict[str, str], host_cpus: dict[str, int]
) -> dict[str, float]:
    """Each host's share of its CPUs that its VMs used (`cpu_s`: each VM's CPU seconds as the
    hypervisor counts them, over `window_s`); a host whose CPU count is unknown is left out."""
    used: dict[str, float] = {}
    for vm, seconds in cpu_s.items():
        used[host_of[vm]] = used.get(host_of[vm], 0.0) + seconds
    return {
        host: round(total / (window_s * host_cpus[host]), 3)
        for host, total in sorted(used.items())
        if host_cpus.get(host) and window_s > 0
    }


def bound_of(result: SearchResult) -> str:
    """What stopped the rate, from the first failing (or invalid) trial above the rate found: a host
    whose CPUs the lab's VMs saturated there (then each guest's own figure only says how it shared
    them), else a VM whose CPU was saturated (by role: the LB first, then the webs, then a client),
    else the criterion it missed; "not reached" when no trial failed."""
    above = [(t, v) for t, v in result.trials if not v.passed and t.offered_rps > result.rate_rps]
    if not above:
        return "not reached (the trial budget ended first)" if result.stopped == "trial budget" else "not reached"
    trial, verdict = min(above, key=lambda tv: tv[0].offered_rps)
    full = [f"{host} {share:.0%}" for host, share in trial.hosts_busy.items() if share >= BUSY]
    if full:
        return f"the host's CPUs ({', '.join(full)} of its CPUs busy with the lab's VMs)"
    for role in ("lb", "web", "client"):
        busy = sorted(n for n, share in trial.cpu.items() if trial.roles.get(n) == role and share >= BUSY)
        if busy:
            return f"{ROLE_BOUNDS[role]} ({', '.join(busy)})"
    if verdict.invalid:
        return f"the clients ({'; '.join(verdict.invalid)})"
    criterion = verdict.failed_criteria[0] if verdict.failed_criteria else "a criterion"
    if criterion.startswith("p99"):
        return f"latency ({criterion})"
    if criterion.startswith("failed"):
        return f"errors ({criterion})"
    return f"throughput ({criterion})"
