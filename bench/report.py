"""Results as the seed's table: Thread, Concurrency, Total Requests, File Size, Requests/sec, Latency (ms)."""

from __future__ import annotations


def _size(n: int) -> str:
    return f"{n // 1024} KiB" if n % 1024 == 0 else f"{n} B"


def results_table(rows: list[dict]) -> str:
    """Markdown, one row per step, in the seed's columns; repeats as median (min-max), flags last."""
    lines = [
        "| Mode | Thread | Concurrency | Total Requests | File Size | Requests/sec | Latency (ms) | Failed | Flags |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        # Numbers that passed through Pulumi's state come back as floats.
        rps, latency = f"{r['requests_per_second']:,.2f}", f"{r['latency_ms']:.3f}"
        if int(r.get("repeats", 1)) > 1:
            rps += f" ({r['requests_per_second_min']:,.2f}-{r['requests_per_second_max']:,.2f})"
            latency += f" ({r['latency_ms_min']:.3f}-{r['latency_ms_max']:.3f})"
        lines.append(
            f"| {r['mode']} | {int(r['lb_threads'])} | {int(r['concurrency']):,} | {int(r['total_requests']):,} | "
            f"{_size(int(r['file_size_bytes']))} | {rps} | {latency} | "
            f"{int(r['failed_requests'] + r['non_2xx_responses'])} | {'; '.join(r.get('flags', [])) or '-'} |"
        )
    return "\n".join(lines) + "\n"
