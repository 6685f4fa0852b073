"""`./labctl graph`: the lab drawn as Graphviz DOT: its hosts, VMs, the segment and the tunnels, and
from a result's byte counters the request path and the response path of its mode, each edge with
the bytes that crossed it (pure). Under proxy and nat the replies come back through the LB; under
dsr and l3dsr they go from the webs straight to the clients, which is the picture's point."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import lbmodes

REQUEST, RESPONSE = "#1f77b4", "#d62728"


@dataclass(frozen=True)
class Node:
    name: str  # client01, lb, web01
    role: str
    host: str = ""


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def traffic(counters: list[dict[str, dict]]) -> dict[str, dict[str, int]]:
    """Each VM's bytes over the result's runs (each run's `counters`: rx_bytes and tx_bytes per VM)."""
    total: dict[str, dict[str, int]] = {}
    for run in counters:
        for vm, c in run.items():
            t = total.setdefault(vm, {"rx": 0, "tx": 0})
            t["rx"] += int(c.get("rx_bytes", 0))
            t["tx"] += int(c.get("tx_bytes", 0))
    return total


def replies_cross_lb(mode: str) -> bool:
    """The mode's own rule (its byte-share bounds): every reply crosses the LB, or none does."""
    return lbmodes.MODES[mode].shares.high >= 1


def paths(nodes: list[Node], mode: str, bytes_of: dict[str, dict[str, int]]) -> list[tuple[str, str, str, str]]:
    """(from, to, colour, label) of the request and response paths, labelled from the VMs' own
    counters: what the clients sent, what each web received and sent, what the clients received.
    Straight replies go to CLIENTS (the clients' group): which web answered which client is not
    counted, so each web's edge carries the web's bytes."""
    clients = [n.name for n in nodes if n.role == "client"]
    webs = [n.name for n in nodes if n.role == "web"]
    lb = next(n.name for n in nodes if n.role == "lb")

    def b(vm: str, way: str) -> str:
        return human(bytes_of[vm][way]) if vm in bytes_of else "?"

    edges = [(c, lb, REQUEST, f"requests {b(c, 'tx')}") for c in clients]
    edges += [(lb, w, REQUEST, f"requests {b(w, 'rx')}") for w in webs]
    if replies_cross_lb(mode):
        edges += [(w, lb, RESPONSE, f"responses {b(w, 'tx')}") for w in webs]
        edges += [(lb, c, RESPONSE, f"responses {b(c, 'rx')}") for c in clients]
    else:
        edges += [(w, CLIENTS, RESPONSE, f"responses {b(w, 'tx')}") for w in webs]
    return edges


CLIENTS = "clients"


def dot(stack: str, mode: str, nodes: list[Node], bytes_of: dict[str, dict[str, int]], tunnel: str = "") -> str:
    """The DOT text: one cluster per host when there are several, each with its end of the tunnel
    (TUNNEL: the VXLAN interface's name), the clients grouped, the segment, and the paths."""
    hosts = sorted({n.host for n in nodes if n.host})
    several = len(hosts) > 1
    lines = [
        f'digraph "l2dsr-{stack}" {{',
        "  rankdir=LR; compound=true; newrank=true;",
        f'  label="l2dsr {stack}: {mode} (blue: requests, red: responses; bytes from the newest result)";',
        '  labelloc=t; fontname="Helvetica"; node [fontname="Helvetica", shape=box, style=rounded];',
        '  edge [fontname="Helvetica", fontsize=10];',
        '  "segment" [label="the lab\'s segment (one Ethernet)", shape=ellipse, style=dashed];',
    ]

    def node_line(n: Node, indent: str) -> str:
        b = bytes_of.get(n.name)
        extra = f"\\nrx {human(b['rx'])}, tx {human(b['tx'])}" if b else ""
        return f'{indent}"{n.name}" [label="{n.name} ({n.role}){extra}"];'

    grouped = False
    for h in hosts if several else [""]:
        on = [n for n in nodes if n.host == h or not several]
        indent = "    " if several else "  "
        if several:
            lines.append(f'  subgraph "cluster_{h}" {{ label="host {h}"; style=solid;')
            lines.append(f'{indent}"vxlan@{h}" [label="{tunnel or "VXLAN"}", shape=cds];')
        lines += [node_line(n, indent) for n in on if n.role != "client"]
        here = [n for n in on if n.role == "client"]
        if here and not grouped:  # the clients' group: where straight replies arrive
            grouped = True
            lines.append(f'{indent}subgraph "cluster_{CLIENTS}" {{ label="clients"; style=dotted;')
            lines += [node_line(n, indent + "  ") for n in here]
            lines.append(f'{indent}  "{CLIENTS}" [shape=point, width=0.05];')
            lines.append(f"{indent}}}")
        else:
            lines += [node_line(n, indent) for n in here]
        if several:
            lines.append("  }")
    lines += [f'  "{n.name}" -> "segment" [dir=none, style=dotted, color=gray];' for n in nodes]
    for a, b in pairwise(hosts) if several else ():
        lines.append(f'  "vxlan@{a}" -> "vxlan@{b}" [dir=both, style=bold, color=gray40, label="VXLAN"];')
    for a, b, colour, label in paths(nodes, mode, bytes_of):
        # Every edge is laid out clients -> LB -> webs (a response is drawn back along it, dir=back),
        # so a request and its response between the same two VMs run side by side, not across.
        if colour == RESPONSE:
            tail = 'ltail="cluster_clients", ' if b == CLIENTS else ""
            lines.append(f'  "{b}" -> "{a}" [dir=back, {tail}color="{colour}", fontcolor="{colour}", label="{label}"];')
        else:
            lines.append(f'  "{a}" -> "{b}" [color="{colour}", fontcolor="{colour}", label="{label}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"
