"""Results as the seed's table: Thread, Concurrency, Total Requests, File Size, Requests/sec, Latency (ms)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import lbmodes
from bench.capacity_report import capacity_charts, capacity_table
from bench.scaling_report import scaling_chart, scaling_table
from views import graph


def camel(key: str) -> str:
    """requests_per_second -> requestsPerSecond: the stack outputs' one casing."""
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def as_outputs(value):
    """Results (snake_case in the saved JSON, which the report reads) with camelCase keys, as every
    stack output has them; keys that are names (web01) stay as they are."""
    if isinstance(value, dict):
        return {camel(k): as_outputs(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_outputs(v) for v in value]
    return value


def _size(n: int) -> str:
    return f"{n // 1024} KiB" if n % 1024 == 0 else f"{n} B"


def _requests(r: dict) -> str:
    """Completed requests; what was asked beside it when they differ (wrk runs for a duration)."""
    done, asked = int(r["total_requests"]), int(r.get("total_requests_asked", r["total_requests"]))
    return f"{done:,}" if done == asked else f"{done:,} (asked {asked:,})"


def _kind(r: dict) -> str:
    """The tool and its connections: rows of different kinds measure different things."""
    return f"{r.get('tool', 'ab')}, {'keep-alive' if r.get('keepalive') else 'a connection per request'}"


def results_table(rows: list[dict]) -> str:
    """Markdown, one row per step, in the seed's columns (Total Requests: completed), the tool and
    keep-alive of the row, the merged p50/p99; repeats as median (min-max), flags last."""
    lines = [
        "| Mode | Tool | Clients | Thread | Concurrency | Total Requests | File Size | Requests/sec | Latency (ms) "
        "| p50 (ms) | p99 (ms) | Failed | Flags |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        # Numbers that passed through Pulumi's state come back as floats.
        rps, latency = f"{r['requests_per_second']:,.2f}", f"{r['latency_ms']:.3f}"
        if int(r.get("repeats", 1)) > 1:
            rps += f" ({r['requests_per_second_min']:,.2f}-{r['requests_per_second_max']:,.2f})"
            latency += f" ({r['latency_ms_min']:.3f}-{r['latency_ms_max']:.3f})"
        pct = r.get("latency_percentiles_ms") or {}
        p50, p99 = (f"{pct[k]:,.1f}" if k in pct else "-" for k in ("p50", "p99"))
        lines.append(
            f"| {_label(r)} | {_kind(r)} | {int(r.get('clients', 1))} | {int(r['lb_threads'])} | "
            f"{int(r['concurrency']):,} | {_requests(r)} | {_size(int(r['file_size_bytes']))} | {rps} | {latency} | "
            f"{p50} | {p99} | {int(r['failed_requests'] + r['non_2xx_responses'])} | "
            f"{'; '.join(r.get('flags', [])) or '-'} |"
        )
    return "\n".join(lines) + "\n"


# ---- the report: saved results of one or more stacks -> Markdown and PNG charts ---------------------


def kind_of(result: dict) -> tuple[str, str, bool, str, str]:
    """What a run can be compared with: its mode, tool, keep-alive and scheme, and for a fault run
    what took the dead web out (dsr with keepalived and dsr without are two kinds)."""
    return (
        result["mode"],
        result.get("tool", "ab"),
        bool(result.get("keepalive", False)),
        result.get("scheme", "http"),
        (result.get("fault") or {}).get("health_check", ""),
    )


def _after(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f}"


def fault_table(faults: list[dict]) -> str:
    """The fault runs side by side: what failed, and how long the LB sent to the dead web and took to
    have it back (seconds after the fault and after the restore, read from the LB every half second)."""
    lines = [
        "| Mode | Health check | Fault | Concurrency | Requests | Failed | Requests/sec | Eject (s) | Readmit (s) "
        "| Sent to the dead web | Flags |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for f in faults:
        lines.append(
            f"| {f['mode']} | {f['health_check']} | {f['fault']} | {int(f['concurrency']):,} | "
            f"{int(f['total_requests']):,} | {int(f['failed_requests'] + f['non_2xx_responses']):,} | "
            f"{f['requests_per_second']:,.2f} | {_after(f.get('eject_s'))} | {_after(f.get('readmit_s'))} | "
            f"{int(f['sent_while_down']):,} | {'; '.join(f.get('flags', [])) or '-'} |"
        )
    return "\n".join(lines) + "\n"


def fault_chart(faults: list[dict], out: Path) -> Path:
    """Per fault run, second by second: requests the webs served, connection errors at the clients,
    and the dead web in rotation; the time it was down shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(faults), 1, figsize=(8, 2.6 * len(faults)), dpi=100, squeeze=False, sharex=True)
    for ax, f in zip(axes[:, 0], faults, strict=True):
        line = f["timeline"]
        seconds = range(len(line["served"]))
        ax.axvspan(f["fault_at_s"], f["restored_at_s"], color="grey", alpha=0.2, label=f"{f['web']} down")
        ax.plot(seconds, line["served"], marker=".", label="served (all webs)")
        ax.plot(seconds, line["connection_errors"], marker=".", color="red", label="connection errors")
        top = max([*line["served"], *line["connection_errors"], 1])
        ax.step(
            seconds,
            [v * top for v in line["in_rotation"]],
            where="post",
            color="green",
            alpha=0.6,
            label=f"{f['web']} in rotation",
        )
        ax.set_title(f"{f['mode']}, {f['health_check']}: {f['fault']}", fontsize=9)
        ax.set_ylabel("per second")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    axes[-1, 0].set_xlabel("seconds of the fault run")
    fig.tight_layout()
    path = out / "fault.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def read_result(path: Path, skip: bool) -> dict | None:
    """One result.json; one that cannot be read (a run cut short) is skipped, saying so, when it is one
    of a folder's runs, and the error, readably, when it was asked for by name."""
    try:
        result = json.loads(path.read_text())
        if not isinstance(result, dict) or "summary" not in result:
            raise ValueError("not a benchmark result")
        return result
    except (OSError, ValueError) as e:
        if not skip:
            raise ResultUnreadable(f"{path} cannot be read: {e}") from None
        print(f"report: skipped {path}: it cannot be read ({e})", file=sys.stderr)
        return None


class ResultUnreadable(ValueError):
    pass


def load_results(paths_: list[Path]) -> list[dict]:
    """result.json files as given; a results/<stack>/ folder gives the newest run of each kind (mode,
    tool, keep-alive, scheme) it holds, so proxy then dsr on one stack are both in the report."""
    found = []
    for path in paths_:
        if not path.is_dir():
            asked = read_result(path, skip=False)
            assert asked is not None  # not skipped: an unreadable one asked for by name raised
            found.append(asked)
            continue
        runs = sorted(path.glob("*/result.json")) or sorted(path.glob("result.json"))
        if not runs:
            raise FileNotFoundError(f"no result.json under {path}")
        newest: dict[tuple, dict] = {}
        for run in runs:  # oldest first (the folders are timestamps): the newest of a kind wins
            result = read_result(run, skip=True)
            if result is None:
                continue
            newest[kind_of(result)] = {**result, "stack": path.name}
        found.extend(newest.values())
    return found


def _label(r: dict) -> str:
    return r["mode"] + (" https" if r.get("scheme") == "https" else "")


def side_by_side(results: list[dict]) -> str:
    """Every mode against the baseline (proxy, at each of its thread counts), point by point and only
    like for like (the same tool and keep-alive): the requests/s ratio, the merged p99s and the LB's
    bytes per request, which tell the forwarding paths apart."""
    rows: dict[tuple[str, str, int, int], dict] = {}
    for res in results:
        for r in res["summary"]:
            rows[(_kind(r), _label(r), int(r["lb_threads"]), int(r["concurrency"]))] = r
    order = {name: i for i, name in enumerate(lbmodes.MODES)}
    baseline = lbmodes.BASELINE.name
    lines = [
        f"| Tool | Concurrency | {baseline} threads | {baseline} req/s | Mode | Mode req/s | Mode / {baseline} | "
        f"{baseline} p99 (ms) | Mode p99 (ms) | {baseline} LB bytes/req | Mode LB bytes/req |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (kind, mode, threads, conc), base in sorted(rows.items(), key=lambda kv: (kv[0][0], kv[0][3], kv[0][2])):
        if mode != baseline:
            continue
        others = sorted(
            {k[1] for k in rows if k[0] == kind and k[1] != baseline}, key=lambda m: (order.get(m.split()[0], 99), m)
        )
        for other in others:
            # At the same thread count where the other mode has one (proxy over https), else its only row.
            o = rows.get((kind, other, threads, conc)) or next(
                (r for (k, m, _, c), r in rows.items() if k == kind and m == other and c == conc), None
            )
            if o is None:
                continue
            p99 = [f"{(r.get('latency_percentiles_ms') or {}).get('p99', 0):,.1f}" for r in (base, o)]
            lines.append(
                f"| {kind} | {conc:,} | {threads} | {base['requests_per_second']:,.2f} | {other} | "
                f"{o['requests_per_second']:,.2f} | {o['requests_per_second'] / base['requests_per_second']:.2f}x | "
                f"{p99[0]} | {p99[1]} | {base['lb_bytes_per_request']:,.0f} | {o['lb_bytes_per_request']:,.0f} |"
            )
    return "\n".join(lines) + "\n"


def charts(results: list[dict], out: Path) -> list[Path]:
    """Requests/s and latency against concurrency: a line per mode (and thread count, tool, keep-alive);
    bars when the matrix has a single concurrency, where a line would be one point on a made-up axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines: dict[str, list[dict]] = {}
    for res in results:
        for r in res["summary"]:
            mode = lbmodes.MODES.get(r["mode"])
            label = mode.title if mode else r["mode"]
            if mode is None or mode.tunes_threads:
                label += f", {int(r['lb_threads'])} thread(s)"
            if r.get("scheme") == "https":
                label += ", https"
            label += f" [{_kind(r)}]"
            lines.setdefault(label, []).append(r)
    points = sorted({int(r["concurrency"]) for rows in lines.values() for r in rows})
    made = []
    for key, ylabel, name in (("requests_per_second", "requests/s", "rps"), ("latency_ms", "latency (ms)", "latency")):
        fig, ax = plt.subplots(figsize=(8, 5.4 if len(points) == 1 else 4.6), dpi=100)
        # Bars side by side per kind (tool, keep-alive), so each mode stands next to what it compares with.
        order = sorted(lines, key=lambda label: (label.split(" [")[-1], label)) if len(points) == 1 else sorted(lines)
        for i, label in enumerate(order):
            rows = lines[label]
            rows = sorted(rows, key=lambda r: r["concurrency"])
            y = [r[key] for r in rows]
            low = [r[key] - r.get(f"{key}_min", r[key]) for r in rows]
            high = [r.get(f"{key}_max", r[key]) - r[key] for r in rows]
            if len(points) == 1:
                ax.bar([i], y, yerr=[low, high], capsize=4, label=label)
            else:
                ax.errorbar([r["concurrency"] for r in rows], y, yerr=[low, high], marker="o", capsize=3, label=label)
        if len(points) == 1:
            ax.set_xticks([])  # the legend names every bar
            ax.set_xlabel(f"concurrency {points[0]:,} (all clients)")
        else:
            ax.set_xticks(points)
            ax.set_xlabel("concurrency (all clients)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{ylabel} (median, min-max)")
        ax.grid(True, axis="y", alpha=0.3)
        if len(points) == 1:  # below the bars, which fill the plot
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)
        else:
            ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"{name}.png"
        fig.savefig(path)
        plt.close(fig)
        made.append(path)
    return made


def lab_picture(res: dict, out: Path) -> Path:
    """The lab drawn with this result's bytes on each path (views/graph.py): an SVG when Graphviz's
    `dot` is installed (./labctl setup does), else the DOT text."""
    nodes = [graph.Node(v["name"], v["role"], v.get("host", "")) for v in res["vms"]]
    hosts = {n.host for n in nodes}
    text = graph.dot(
        res.get("stack", ""),
        res["mode"],
        nodes,
        graph.traffic([r.get("counters") or {} for r in res["runs"]]),
        "VXLAN" if len(hosts) > 1 else "",
    )
    stem = out / f"graph-{res.get('stack', '') or 'lab'}-{res['mode']}-{Path(res['raw_dir']).name}"
    stem.with_suffix(".dot").write_text(text)
    if not shutil.which("dot"):
        return stem.with_suffix(".dot")
    subprocess.run(["dot", "-Tsvg", "-o", str(stem.with_suffix(".svg"))], input=text, text=True, check=True)
    return stem.with_suffix(".svg")


def write_report(results: list[dict], out: Path, scale: dict | None = None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    parts = ["# l2dsr benchmark report\n"]
    for res in results:
        parts.append(
            f"## {res.get('stack', '')} {res['mode']} ({_kind(res)})\n\nRaw output: `{res['raw_dir']}`\n\n"
            f"{results_table(res['summary'])}"
        )
    modes = {r["mode"] for res in results for r in res["summary"]}
    baseline = lbmodes.BASELINE.name
    if baseline in modes and len(modes) > 1:
        parts.append(f"## Each mode against {baseline}\n\n{side_by_side(results)}")
    if results:
        for png in charts(results, out):
            parts.append(f"![{png.stem}]({png.name})\n")
    for res in results:
        if res.get("vms"):  # results from before the VMs were recorded have no picture
            picture = lab_picture(res, out)
            parts.append(f"## Where the bytes went: {res.get('stack', '')} {res['mode']}\n\n![graph]({picture.name})\n")
    searched = [p for res in results for p in res.get("capacity") or []]
    if searched:  # l2dsr:benchSearch: capacity beside the seed's closed-loop table
        parts.append(f"## Capacity (docs/capacity.md)\n\n{capacity_table(searched)}")
        parts += [f"![{png.stem}]({png.name})\n" for png in capacity_charts(searched, out, baseline)]
    faults = [{**res["fault"], "mode": res["mode"]} for res in results if res.get("fault")]
    if faults:
        parts.append(f"## A web fails during the load\n\n{fault_table(faults)}")
        parts.append(f"![fault]({fault_chart(faults, out).name})\n")
    if scale and scale.get("points"):
        parts.append(f"## Scaling (`./labctl test -m scale`)\n\n{scaling_table(scale['points'])}")
        parts.append(f"Phases: {scale.get('phases', {})}\n\n![scaling]({scaling_chart(scale['points'], out).name})\n")
    report = out / "report.md"
    report.write_text("\n".join(parts))
    return report


def main(argv: list[str]) -> int:
    """python -m bench.report [RESULT.json | results/<stack>/ ...]: newest run of every stack by default."""
    root = Path(__file__).resolve().parent.parent / "results"
    stacks = sorted(p for p in root.glob("*/") if p.name not in ("measurements", "report")) if root.exists() else []
    sources = [Path(a) for a in argv] or stacks
    scale_file = root / "measurements" / "scale.json"
    scale = json.loads(scale_file.read_text()) if scale_file.exists() and not argv else None
    if not sources and not scale:
        print(f"no saved results in {root}: run ./labctl up first", file=sys.stderr)
        return 1
    try:
        results = load_results(sources)
    except (ResultUnreadable, FileNotFoundError) as e:
        print(f"report: {e}", file=sys.stderr)
        return 1
    report = write_report(results, root / "report" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()), scale)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
