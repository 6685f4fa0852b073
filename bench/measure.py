"""One measured load on the lab, the part every kind of run shares (the matrix's steps, the search's
trials): a warm-up when asked, every VM's counters and the clients' clocks right before, the load on
every client at one moment of the host's clock, the domains' bytes from the hypervisor right around
it, the counters again; each client's output kept and parsed, placed on the host's clock."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import loadtools
import runtime
from bench import clocks, counters, probes
from bench.matrix import Step, split
from bench.parse import ParseError, Placed
from bench.probes import BenchmarkFailed
from bench.spec import BenchSpec
from loadtools import Load, LoadTool
from runtime.ssh import Ssh

# Several clients start at one moment this far ahead: time for every SSH session to come up (each
# takes up to a second or two under emulation), so that none starts late.
START_LEAD_S = 2.5


def on_clients(bench: BenchSpec, command) -> list:
    """`command(i)` on every client at once; their outputs, in the clients' order."""
    return runtime.at_once(command, range(len(bench.clients)))


def loads(bench: BenchSpec, step: Step) -> list[Load]:
    conc, reqs = split(step.concurrency, len(bench.clients)), split(step.requests, len(bench.clients))
    return [Load(bench.url, c, n, bench.keepalive) for c, n in zip(conc, reqs, strict=True)]


@dataclass
class Measured:
    """One run of a step on every client at once, with what was read around it."""

    placed: list[Placed]  # the clients' runs, on the host's clock
    settled: dict[str, str]  # each VM's TCP state when the run began (probes.settle)
    deltas: dict[str, dict[str, int]]  # each VM's counters over the run: guest counters and domain bytes
    cpu: dict[str, float]  # each VM's busy share over the run, as the guest saw it
    webs: dict[str, counters.WebCounts]  # what each web's nginx served and accepted over the run
    timing_s: dict[str, float]  # how long each part took: the load, and what the runner did around it
    texts: list[str] = field(default_factory=list)  # what each client printed, in the clients' order
    cpu_ns: dict[str, int] = field(default_factory=dict)  # each domain's CPU time over the run (the hypervisor's)


def measure(
    ssh: Ssh,
    readers: counters.Readers,
    bench: BenchSpec,
    step: Step | None,
    tag: str,
    out: Path,
    warm: bool,
    given: tuple[LoadTool, list[Load]] | None = None,
    document_bytes: int = 0,
) -> Measured:
    """A warm-up when `warm`, then (once earlier connections are gone) every VM's counters and at
    the same time the clients' clocks, the domains' bytes and CPU time from the hypervisor right
    before and right after the load, and every VM's counters again. The load is the step's with the
    benchmark's tool, or `given` (a tool and each client's load: the search's trials)."""
    if given:
        tool, work = given
    else:
        assert step is not None
        tool, work = loadtools.TOOLS[bench.tool], loads(bench, step)
    timing: dict[str, float] = {}
    mark = time.monotonic()

    def took(part: str) -> None:
        nonlocal mark
        now = time.monotonic()
        timing[part] = round(now - mark, 2)
        mark = now

    if warm:
        on_clients(bench, lambda i: ssh.run(bench.clients[i].address, tool.warmup(work[i]), timeout=600, check=False))
    took("warmup")
    with ThreadPoolExecutor(max_workers=1) as pool:  # the clocks while the VMs are read
        clocked = pool.submit(lambda: on_clients(bench, lambda i: clocks.measure(ssh, bench.clients[i].address)))
        settled, before = probes.settle(readers)
        offsets = clocked.result()
    took("settle_read_and_clocks")
    bytes0, cpu0 = counters.domain_bytes(bench.vms), counters.domain_cpu_ns(bench.vms)
    took("domain_bytes")
    # One moment of the host's clock, on each client's own: the clients start together.
    start = time.time() + START_LEAD_S if len(bench.clients) > 1 else 0.0
    starts = [int((start + o.seconds) * 1e9) if start else 0 for o in offsets]
    texts = on_clients(
        bench,
        lambda i: ssh.run(bench.clients[i].address, tool.run(work[i], starts[i]), timeout=3600, check=False).stdout,
    )
    took("load")
    bytes1, cpu1 = counters.domain_bytes(bench.vms), counters.domain_cpu_ns(bench.vms)
    after = readers.read_all()
    took("read_after")
    placed = place_runs(bench, tag, texts, work, offsets, out, tool, document_bytes)
    deltas = {
        name: {
            **counters.delta(after[name].counters(), before[name].counters()),
            **counters.delta(bytes1[name], bytes0[name]),
        }
        for name in after
    }
    cpu = {name: counters.busy(after[name].counters(), before[name].counters()) for name in after}
    webs = {w.name: after[w.name].web().since(before[w.name].web()) for w in bench.webs}
    cpu_ns = {name: cpu1[name] - cpu0[name] for name in cpu1}
    return Measured(placed, settled, deltas, cpu, webs, timing, texts, cpu_ns)


def place_runs(
    bench: BenchSpec,
    tag: str,
    texts: list[str],
    work: list[Load],
    offsets: list[clocks.Offset],
    out: Path,
    tool: LoadTool | None = None,
    document_bytes: int = 0,
) -> list[Placed]:
    """The clients' outputs, kept under `out` and parsed, each run placed on the host's clock."""
    tool = tool or loadtools.TOOLS[bench.tool]
    placed = []
    for client, text, load, offset in zip(bench.clients, texts, work, offsets, strict=True):
        (out / f"{tag}.{client.name}.{tool.name}.txt").write_text(text)
        try:
            run = tool.parse(text, load, document_bytes or bench.file_size_bytes)
        except ParseError as e:
            raise BenchmarkFailed(
                f"{client.name}: {tool.name} ({tool.run(load)[:160]}...) did not report a result: {e}. "
                f"Its output: {out / f'{tag}.{client.name}.{tool.name}.txt'}"
            ) from None
        started = loadtools.clock_start(text) / 1e9 - offset.seconds
        placed.append(Placed(run, client.name, started, offset.error_s))
    return placed


def readers_of(ssh: Ssh, bench: BenchSpec) -> counters.Readers:
    """Every VM's reading process (bench/reader.sh), for the length of a `with` block."""
    return counters.Readers(ssh, bench.vms, bench.vip, loadtools.port(bench.scheme))
