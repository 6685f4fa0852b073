"""The scaling curve's table and chart in `./labctl report` (results/measurements/scale.json, from
`./labctl test -m scale`). Pure over that record."""

from __future__ import annotations

from pathlib import Path

__all__ = ["scaling_chart", "scaling_table"]


def scaling_table(points: list[dict]) -> str:
    """The scaling curve (tests/test_lab_scale.py): what `up` costs as the lab grows."""
    lines = [
        "| Point | VMs | `up` (s) | Boot max (s) | Boot CPU-s (median) | Waited to boot, max (s) | QEMU RSS per guest (MiB) "
        "| Host memory used (MiB) | Requests/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in points:
        cpu = f"{p['boot_cpu_s_median']:.0f}" if p.get("boot_cpu_s_median") else "-"
        rps = ", ".join(f"{r:,.0f}" for r in p.get("requests_per_second", []))
        lines.append(
            f"| {p['label']} | {p['vms']} | {p['up_s']:,.0f} | {p['boot_s_max']:.0f} | {cpu} | "
            f"{p['waited_s_max']:.0f} | {p.get('qemu_rss_mib_per_guest') or '-'} | {p['host_memory_used_mib']:,} | {rps} |"
        )
    return "\n".join(lines) + "\n"


def scaling_chart(points: list[dict], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = sorted((p for p in points if "switch" not in p["label"]), key=lambda p: p["vms"])
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    x = [p["vms"] for p in curve]
    ax.plot(x, [p["up_s"] for p in curve], marker="o", label="`up` from nothing (s)")
    ax.plot(x, [p["boot_s_max"] for p in curve], marker="s", label="longest boot (s)")
    ax.set_xlabel("VMs (client, LB, webs)")
    ax.set_ylabel("seconds")
    mem = ax.twinx()
    mem.plot(x, [p["host_memory_used_mib"] / 1024 for p in curve], "g--", marker="^", label="host memory used (GiB)")
    mem.set_ylabel("GiB")
    handles = ax.get_legend_handles_labels()[0] + mem.get_legend_handles_labels()[0]
    ax.legend(handles, [str(h.get_label()) for h in handles], loc="upper left")
    ax.set_title("cost of the lab vs its size")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    path = out / "scaling.png"
    fig.savefig(path)
    plt.close(fig)
    return path
