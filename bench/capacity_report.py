"""The capacity search's results for people: the table (stack output `capacityTable`) and, in
`./labctl report`, capacity against response size per mode, the dsr/proxy ratio against size, and
latency against offered load. Pure over the saved results (result.json's `capacity`)."""

from __future__ import annotations

from pathlib import Path

from bench.capacity import hosts_busy

__all__ = [
    "capacity_charts",
    "capacity_table",
    "closed_against_open",
    "closed_open_table",
    "host_table",
    "ratio_table",
    "ratios",
    "unconfirmed_ratios",
]


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
        if m == mode and rate and by.get((against, test, size, threads))  # 0: no trial passed, no ratio
    }


def unconfirmed_ratios(points: list[dict], mode: str, against: str) -> set[tuple[str, int, int]]:
    """The keys of `ratios` whose either side is unconfirmed (its search ended on its trial budget)."""
    sure = {(p["mode"], p["test"], int(p["size_kib"]), int(p["threads"])): p["confirmed"] for p in points}
    return {key for key in ratios(points, mode, against) if not (sure[(mode, *key)] and sure[(against, *key)])}


def ratio_table(points: list[dict], baseline: str) -> str:
    """Markdown, a row per mode and test, a column per size: the mode's capacity over `baseline`'s, like
    for like (same test, size and threads; the fewest threads where several were stepped); a ratio with
    an unconfirmed side is starred, and said so under the table."""
    sizes = sorted({int(p["size_kib"]) for p in points})
    lines = [
        f"| Mode / {baseline} | Test | " + " | ".join(f"{s:,} KiB" for s in sizes) + " |",
        "|---|---|" + "---|" * len(sizes),
    ]
    starred = False
    for mode in sorted({p["mode"] for p in points} - {baseline}):
        by = ratios(points, mode, baseline)
        unsure = unconfirmed_ratios(points, mode, baseline)
        for test in sorted({t for t, _s, _th in by}):
            cells = []
            for size in sizes:
                found = [(th, r) for (t, s, th), r in sorted(by.items()) if t == test and s == size]
                if not found:
                    cells.append("-")
                    continue
                th, r = found[0]
                star = (test, size, th) in unsure
                starred |= star
                cells.append(f"{r:.2f}" + ("*" if star else ""))
            lines.append(f"| {mode} | {test} | " + " | ".join(cells) + " |")
    if starred:
        lines += [
            "",
            "\\* a side is unconfirmed: its search ended on its trial budget, at the highest short trial that passed.",
        ]
    return "\n".join(lines) + "\n"


def closed_open_table(rows: list[dict]) -> str:
    """Markdown of closed_against_open's rows: the closed-loop tool's p99 beside the open-loop p99 at
    about the same rate."""
    lines = [
        "| Mode | Test | Size (KiB) | Closed loop | req/s | p99 (ms) | Open loop offered (req/s) | achieved | "
        "p99 from the due time (ms) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['test']} | {int(r['size_kib']):,} | {r['closed_loop_tool']} -c {r['concurrency']} | "
            f"{r['closed_loop_rps']:,.0f} | {r['closed_loop_p99_ms']:,.1f} | {r['open_loop_offered_rps']:,.1f} | "
            f"{r['open_loop_achieved_rps']:,.1f} | {r['open_loop_p99_ms']:,.1f} |"
        )
    return "\n".join(lines) + "\n"


def host_table(points: list[dict], host_of: dict[str, str], host_cpus: dict[str, int]) -> str:
    """Markdown, a row per point: at the lowest failing trial above the rate found, each host's share of
    its CPUs the lab's VMs used (the trial's own `hosts_busy`, or from its hypervisor CPU seconds over
    its reading window when it predates that) and the busiest guest: the evidence behind "bound by"."""
    lines = ["| Mode | Test | Size (KiB) | Host CPUs busy | Busiest guest | Bound by |", "|---|---|---|---|---|---|"]
    for p in points:
        above = [t for t in p["trials"] if not t.get("passed") and t["offered_rps"] > p["rate_rps"]]
        if not above:
            continue
        t = min(above, key=lambda t: t["offered_rps"])
        busy = t.get("hosts_busy") or hosts_busy(t["hypervisor_cpu_s"], t.get("read_s") or 0.0, host_of, host_cpus)
        guest = max(t["cpu"].items(), key=lambda kv: kv[1])
        lines.append(
            f"| {p['mode']} | {p['test']} | {int(p['size_kib']):,} | "
            f"{', '.join(f'{h} {b:.0%}' for h, b in busy.items()) or '-'} | {guest[0]} {guest[1]:.0%} | {p['bound']} |"
        )
    return "\n".join(lines) + "\n"


def closed_against_open(result: dict) -> list[dict]:
    """What coordinated omission hid, from one result.json: for each closed-loop step (ab, wrk) whose
    file size and keep-alive match a searched point, its throughput and p99 beside the p99 of the
    search's valid trial offered nearest that throughput (vegeta's, counted from each request's due
    time). Empty when no searched size is the matrix's file size."""
    rows = []
    for step in result.get("summary") or []:
        size_kib = step["file_size_bytes"] / 1024
        for p in result.get("capacity") or []:
            if p["size_kib"] != size_kib or bool(p["keepalive"]) != bool(step["keepalive"]):
                continue
            valid = [t for t in p["trials"] if not t["invalid"]]
            if not valid:
                continue
            near = min(valid, key=lambda t: abs(t["offered_rps"] - step["requests_per_second"]))
            rows.append(
                {
                    "mode": result["mode"],
                    "test": p["test"],
                    "size_kib": p["size_kib"],
                    "closed_loop_tool": step["tool"],
                    "concurrency": step["concurrency"],
                    "closed_loop_rps": step["requests_per_second"],
                    "closed_loop_p99_ms": step["latency_percentiles_ms"]["p99"],
                    "open_loop_offered_rps": near["offered_rps"],
                    "open_loop_achieved_rps": near["achieved_rps"],
                    "open_loop_p99_ms": near["latency_ms"]["p99"],
                }
            )
    return rows


def capacity_charts(points: list[dict], out: Path, baseline: str, fmt: str = "png") -> list[Path]:
    """Capacity against response size per mode (one line per mode and test), each mode's capacity over
    `baseline`'s against size, and latency (p99, from each request's due time) against offered load
    per mode: the curve that bends at capacity, from every trial of the search. `fmt` "svg" draws text
    the docs can hold, the same for the same points (no date, a fixed id salt)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def line(ax, xys: list[tuple[int, float, bool]], label: str) -> None:
        """A line through the points, each unconfirmed one (its search ended on its budget) hollow."""
        xys = sorted(xys)
        (drawn,) = ax.plot([x for x, _, _ in xys], [y for _, y, _ in xys], marker="o", label=label)
        hollow = [(x, y) for x, y, sure in xys if not sure]
        if hollow:
            ax.plot(
                [x for x, _ in hollow],
                [y for _, y in hollow],
                linestyle="",
                marker="o",
                markerfacecolor="white",
                color=drawn.get_color(),
            )

    paths = []
    series: dict[tuple[str, str], list[tuple[int, float, bool]]] = {}
    for p in points:
        series.setdefault((p["mode"], p["test"]), []).append((int(p["size_kib"]), p["rate_rps"], p["confirmed"]))
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    for (mode, test), xys in sorted(series.items()):
        line(ax, xys, f"{mode}, {test}")
    ax.set_xscale("log", base=2)
    paths.append(
        _save(
            fig,
            ax,
            out / f"capacity.{fmt}",
            "capacity against response size (hollow: unconfirmed)",
            "response size (KiB)",
            "capacity (requests/s)",
        )
    )

    modes = sorted({p["mode"] for p in points} - {baseline})
    if baseline in {p["mode"] for p in points} and modes:
        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
        for mode in modes:
            by_test: dict[str, list[tuple[int, float, bool]]] = {}
            unsure = unconfirmed_ratios(points, mode, baseline)
            for (test, size, threads), r in sorted(ratios(points, mode, baseline).items()):
                by_test.setdefault(test, []).append((size, r, (test, size, threads) not in unsure))
            for test, xys in by_test.items():
                line(ax, xys, f"{mode} / {baseline}, {test}")
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set_xscale("log", base=2)
        title = f"each mode's capacity over {baseline}'s, like for like (hollow: a side unconfirmed)"
        paths.append(_save(fig, ax, out / f"capacity-ratio.{fmt}", title, "response size (KiB)", f"over {baseline}'s"))

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    for p in points:
        trials = sorted((t for t in p["trials"] if not t.get("invalid")), key=lambda t: t["offered_rps"])
        ax.plot(
            [t["offered_rps"] for t in trials],
            [t["latency_ms"]["p99"] for t in trials],
            marker=".",
            label=f"{p['mode']}, {p['test']}, {int(p['size_kib'])} KiB",
        )
    ax.set_yscale("log")
    title = "latency against offered load (valid trials)"
    paths.append(
        _save(
            fig, ax, out / f"capacity-latency.{fmt}", title, "offered load (requests/s)", "p99 from the due time (ms)"
        )
    )
    return paths


def _save(fig, ax, path: Path, title: str, xlabel: str, ylabel: str) -> Path:
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    if path.suffix == ".svg":
        with plt.rc_context({"svg.hashsalt": "l2dsr"}):
            fig.savefig(path, metadata={"Date": None})
    else:
        fig.savefig(path)
    plt.close(fig)
    return path
