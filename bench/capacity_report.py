"""The capacity search's results for people: the table (stack output `capacityTable`) and, in
`./labctl report`, capacity against response size per mode, the dsr/proxy ratio against size, and
latency against offered load. Pure over the saved results (result.json's `capacity`)."""

from __future__ import annotations

__all__ = ["capacity_table", "ratios"]


def _latency(at: dict) -> str:
    return f"{at['p50']:.1f} / {at['p99']:.1f} / {at['p99.9']:.1f}" if at else "-"


def capacity_table(points: list[dict]) -> str:
    """Markdown, a row per point: the highest rate that passed every criterion (confirmed or not), in
    requests/s and Gbit/s of response payload, what bound it, latency at half of it, the trials."""
    lines = [
        "| Mode | Test | Size (KiB) | Threads | Capacity (req/s) | Gbit/s | Confirmed | Bound by "
        "| p50 / p99 / p99.9 at 50% (ms) | Trials | Stopped |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in points:
        lines.append(
            f"| {p['mode']} | {p['test']} | {int(p['size_kib']):,} | {int(p['threads'])} | {p['rate_rps']:,.0f} | "
            f"{p['gbps']:.3f} | {'yes' if p['confirmed'] else 'no'} | {p['bound']} | "
            f"{_latency(p.get('latency_at_half_ms') or {})} | {len(p['trials'])} | {p['stopped']} |"
        )
    return "\n".join(lines) + "\n"


def ratios(points: list[dict], mode: str, against: str) -> dict[tuple[str, int, int], float]:
    """(test, size, threads) -> `mode`'s capacity over `against`'s, where both found one (like for like:
    the same test, size and threads)."""
    by = {(p["mode"], p["test"], int(p["size_kib"]), int(p["threads"])): p["rate_rps"] for p in points}
    return {
        (test, size, threads): round(rate / by[(against, test, size, threads)], 2)
        for (m, test, size, threads), rate in by.items()
        if m == mode and by.get((against, test, size, threads))
    }
