"""Results as the seed's table: Thread, Concurrency, Total Requests, File Size, Requests/sec, Latency (ms)."""

from __future__ import annotations


def _size(n: int) -> str:
    return f"{n // 1024} KiB" if n % 1024 == 0 else f"{n} B"


def results_table(runs: list[dict]) -> str:
    """Markdown, one row per run, in the seed's columns plus mode and failures."""
    lines = [
        "| Mode | Thread | Concurrency | Total Requests | File Size | Requests/sec | Latency (ms) | Failed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        # Numbers that passed through Pulumi's state come back as floats.
        lines.append(
            f"| {r['mode']} | {int(r['lb_threads'])} | {int(r['concurrency']):,} | {int(r['total_requests']):,} | "
            f"{_size(int(r['file_size_bytes']))} | {r['requests_per_second']:,.2f} | {r['latency_ms']:.3f} | "
            f"{int(r['failed_requests'] + r['non_2xx_responses'])} |"
        )
    return "\n".join(lines) + "\n"
