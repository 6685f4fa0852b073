"""Is a run a result? Its byte counters against the mode's bounds, and what distorts it. Pure.

The proof of mode uses the share of the response bytes that crossed the LB:
  (LB bytes sent - client bytes sent) / client bytes received
The LB forwards everything the clients send in every mode (requests, ACKs); what it sends beyond
that is responses: about 0% when the webs reply directly, about 100% when the replies pass the LB,
whatever the file size. (LB sent / client received, also reported, includes the forwarded
requests: about 9% for 5 KiB.) Each mode gives its bounds (lbmodes/base.py ShareRule).
"""

from __future__ import annotations

from lbmodes import ShareRule
from runtime.vm import VmRef

MIN_REQUEST_SHARE = 0.50  # LB bytes received / client bytes sent, at least, in every mode
CLIENT_CPU_SATURATED = 0.95  # a client this busy measures itself, not the LB
LOSSES = ("listen_drops", "listen_overflows", "rx_dropped", "tx_dropped")


def response_share(lb: dict[str, int], clients: dict[str, int]) -> float:
    return (lb["tx_bytes"] - clients["tx_bytes"]) / max(1, clients["rx_bytes"])


def mode_problem(mode: str, shares: ShareRule, lb: dict[str, int], clients: dict[str, int]) -> str | None:
    """Does the traffic match the mode? Deltas of eth0 byte counters over the run, against the mode's bounds."""
    sent_share = response_share(lb, clients)
    request_share = lb["rx_bytes"] / max(1, clients["tx_bytes"])
    if request_share < MIN_REQUEST_SHARE:
        return (
            f"the LB received only {request_share:.0%} of the bytes the clients sent: requests are not going "
            "through it (a web answering ARP for the VIP?)"
        )
    if not shares.low <= sent_share <= shares.high:
        return (
            f"mode {mode}, but {sent_share:.0%} of the response bytes crossed the LB (expected "
            f"{shares.expected}): {shares.otherwise}"
        )
    return None


def flags_of(deltas: dict[str, dict[str, int]], cpu: dict[str, float], clients: list[VmRef]) -> list[str]:
    """What distorts a result: a saturated client measures the client, drops lose requests."""
    flags = [
        f"client CPU saturated: {c.name} {cpu[c.name]:.0%}" for c in clients if cpu[c.name] >= CLIENT_CPU_SATURATED
    ]
    for name, d in deltas.items():
        lost = {k: d[k] for k in LOSSES if d[k] > 0}
        if lost:
            flags.append(f"drops on {name}: " + ", ".join(f"{k} {v}" for k, v in lost.items()))
    return flags


BALANCE_TOLERANCE = 0.05  # round robin: every web within +-5% of the mean (at least +-1, for small counts)


def balance_flag(unit: str, counts: dict[str, int]) -> str | None:
    """Round robin should give every web the same number of `unit`s (what the mode's scheduler
    spreads: connections for IPVS, requests for a proxy); a web off the mean by more than the
    tolerance is named, with its count. A web that served nothing is always off."""
    if len(counts) < 2:
        return None
    mean = sum(counts.values()) / len(counts)
    allowed = max(BALANCE_TOLERANCE * mean, 1.0)
    off = {name: n for name, n in counts.items() if abs(n - mean) > allowed}
    if not off:
        return None
    worst = ", ".join(
        f"{name} {n:,} ({(n - mean) / mean:+.0%})" if mean else f"{name} {n:,}" for name, n in sorted(off.items())
    )
    return f"unbalanced {unit}: {worst} against a mean of {mean:,.1f} (round robin: within +-{BALANCE_TOLERANCE:.0%})"
