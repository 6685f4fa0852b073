"""Seeing the lab as a user does: `./labctl status`, `capture` and `graph`, and what a capture must
show of a mode's paths, field by field."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from hypervisor import paths
from tests.e2e.lab import bench_again


def labctl(cli, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**cli.env, "L2DSR_STACK": cli.stack}
    return subprocess.run(
        [str(cli.project_dir / "labctl"), *args],
        cwd=cli.project_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def lab_status(cli, hosts: int) -> dict:
    """`./labctl status --json` on the deployed lab: every VM running with all its services, each host's
    tunnel end flooding to the other; the table's text for the record."""
    done = labctl(cli, "status", cli.stack, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    assert doc["notes"] == [], doc["notes"]
    assert [(v["state"], v["services"].startswith("all ")) for v in doc["vms"]] == [("running", True)] * len(
        doc["vms"]
    ), doc
    assert all(v["tap"].startswith("vnet") and v["mac"].startswith("52:54:00:") for v in doc["vms"]), doc
    if hosts > 1:
        assert sorted(doc["tunnels"]) == ["h1", "h2"] and all(
            "floods to 10.254.0." in t for t in doc["tunnels"].values()
        )
    table = labctl(cli, "status", cli.stack)
    assert table.returncode == 0 and all(v["name"] in table.stdout for v in doc["vms"]), table.stdout + table.stderr
    doc["table"] = table.stdout
    return doc


def frames(pcap: Path) -> list[dict]:
    """The TCP frames of a pcap, decoded by tcpdump with their link-layer headers."""
    done = subprocess.run(["tcpdump", "-nn", "-e", "-r", str(pcap)], capture_output=True, text=True, check=True)
    found = []
    for line in done.stdout.splitlines():
        m = re.search(
            r"(\S+) > (\S+), ethertype IPv4 .*?: (\d+\.\d+\.\d+\.\d+)\.(\d+) > (\d+\.\d+\.\d+\.\d+)\.(\d+):", line
        )
        if m:
            keys = ("src_mac", "dst_mac", "src", "sport", "dst", "dport")
            found.append(dict(zip(keys, m.groups(), strict=True)) | {"line": line})
    return found


def captures_during_a_benchmark(cli, tmp_path, trigger: str, wanted: dict[str, str]) -> dict[str, list[dict]]:
    """`./labctl capture VM --write` of each VM (with its filter) started, then one benchmark (its
    own checks included), then each capture's frames: a capture ends at its count or its seconds."""
    procs = {}
    for vm, bpf in wanted.items():
        pcap = tmp_path / f"{trigger}-{vm}.pcap"
        argv = [
            str(cli.project_dir / "labctl"),
            "capture",
            vm,
            "--filter",
            bpf,
            "--count",
            "400",
            "--seconds",
            "240",
            "--write",
            str(pcap),
        ]
        env = {**cli.env, "L2DSR_STACK": cli.stack}
        procs[vm] = (
            subprocess.Popen(
                argv, cwd=cli.project_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            ),
            pcap,
        )
    try:
        for vm, (proc, _) in procs.items():  # tcpdump says so on stderr once it listens
            line = ""
            while "listening on" not in line:
                line = proc.stderr.readline()
                assert line or proc.poll() is None, f"capture on {vm} ended before it listened: {proc.stderr.read()}"
        assert bench_again(cli, trigger).returncode == 0
    finally:
        for proc, _ in procs.values():
            try:
                proc.wait(timeout=300)
            except subprocess.TimeoutExpired:
                proc.kill()
    for vm, (proc, _) in procs.items():
        assert proc.returncode == 0, f"capture on {vm}: {proc.stderr.read()}"
    return {vm: frames(pcap) for vm, (_, pcap) in procs.items()}


def check_captures(status_doc: dict, caught: dict[str, list[dict]], vip: str, replies_bypass: bool) -> list[str]:
    """DSR: requests to VIP:80 arrive at the LB for the LB's MAC and leave it for a web's MAC with the
    IP destination unchanged, and a web's replies leave it with source VIP:80. Proxy: the LB opens its
    own connections to the webs (its address as the source, a web's address as the destination)."""
    mac = {v["name"]: v["mac"] for v in status_doc["vms"]}
    addr = {v["name"]: v["address"] for v in status_doc["vms"]}
    webs = {v["name"] for v in status_doc["vms"] if v["role"] == "web"}
    clients = {v["address"] for v in status_doc["vms"] if v["role"] == "client"}
    at_lb = caught["lb"]
    arriving = [f for f in at_lb if f["dst_mac"] == mac["lb"] and f["dst"] == vip and f["dport"] == "80"]
    assert arriving, ("no request to the VIP arrived for the LB's MAC", at_lb[:5])
    if replies_bypass:
        forwarded = [f for f in at_lb if f["src_mac"] == mac["lb"] and f["dst_mac"] in {mac[w] for w in webs}]
        assert forwarded and all(f["dst"] == vip and f["dport"] == "80" and f["src"] in clients for f in forwarded), (
            forwarded[:5]
        )
        replies = [f for f in caught["web01"] if f["src_mac"] == mac["web01"] and f["sport"] == "80"]
        assert replies and all(f["src"] == vip and f["dst"] in clients for f in replies), caught["web01"][:5]
        assert not [f for f in at_lb if f["src"] == vip and f["sport"] == "80"], "a reply crossed the LB under dsr"
        return [forwarded[0]["line"], replies[0]["line"]]
    towards = [
        f for f in at_lb if f["src_mac"] == mac["lb"] and f["dst"] in {addr[w] for w in webs} and f["dport"] == "80"
    ]
    assert towards and all(f["src"] not in clients and f["src"] != vip for f in towards), towards[:5]
    return [arriving[0]["line"], towards[0]["line"]]


def lab_graph(cli, name: str) -> str:
    done = labctl(cli, "graph", cli.stack)
    assert done.returncode == 0, done.stdout + done.stderr
    svg = cli.project_dir / "results" / f"{cli.stack}-graph.svg"
    text = svg.read_text()
    assert "responses" in text and "requests" in text, text[:500]
    out = paths.PROJECT_DIR / "results" / "measurements" / f"graph-{name}.svg"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return str(out)


def seen_on_the_wire(run, tmp_path, name: str, hosts: int, replies_bypass: bool) -> None:
    """What a user runs to see the lab, on the deployed lab, into the run's record under `name`: the
    status table (every VM running with its services), a capture on the LB's tap (and, when the
    replies bypass the LB, on web01's) during one benchmark read field by field, the picture."""
    cli = run.cli
    wanted = {"lb": "tcp port 80", **({"web01": "tcp port 80"} if replies_bypass else {})}
    with run.timed(f"seen_{name}"):
        seen = lab_status(cli, hosts)
        caught = captures_during_a_benchmark(cli, tmp_path, f"see-{name}", wanted)
        vip = json.loads(cli("stack", "output", "vip", "--json").stdout)
        run.seen[f"status_{name}"] = seen["table"].splitlines()
        run.seen[f"capture_{name}"] = check_captures(seen, caught, vip, replies_bypass)
        run.seen[f"graph_{name}"] = [lab_graph(cli, name)]
