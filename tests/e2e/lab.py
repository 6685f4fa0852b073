"""The end-to-end labs' shared machinery: the stack `e2e` with its load settings, one `Run` per lab
(its CLI, each phase's time, results and what the CLI said, written to
results/measurements/<name>.json), and the checks every topic makes on a deployed lab: the results
against the mode, the services inside the guests, the IPVS paths, the engine's plan and history."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import yaml

import lbmodes
from guest import render
from hypervisor import libvirt, paths, simhosts
from hypervisor.vmssh import host_refs
from hypervisor.vmssh import private_key as private_key_of
from lab import config
from runtime.hostshell import HostRef
from runtime.ssh import KeyFile, Ssh
from tests.conftest import stack_outputs
from tests.stacks import lab_stack
from virt.tunnel import interface_name
from virt.virsh import Virsh

STACK = "e2e"
# Two clients at once, as the seed ran them; 2 concurrency levels x 2 repeats; under proxy also at 1
# and 2 HAProxy threads (changed on the running LB).
CLIENTS = 2
# Its own addresses: a user's lab stack up on this host (the defaults' subnets) must not fail the tests,
# nor the tests touch it (CI once failed so, with a lab another checkout left defined).
OWN_ADDRESSES = {
    "frontSubnet": "192.168.98.0/24",
    "vip": "192.168.98.100",
    "serverSubnet": "172.16.98.0/24",
    "firstWebAddress": "172.16.98.101",
}
MATRIX = {"benchConcurrency": [10, 20], "benchRequests": [1000], "benchRepeats": 2, "benchThreads": [1, 2]}
# ab with keep-alive: the TLS handshakes (about 35/s under emulation) are not what is measured here.
HTTPS_MATRIX = {"benchConcurrency": [10], "benchRequests": [400], "benchRepeats": 1, "benchThreads": [1, 2]}
# The lifecycle phases (drift, replace) and the fault and flag runs test what happens, not numbers:
# one small step each (CI's time).
SMALL_MATRIX = {"benchConcurrency": [10], "benchRequests": [500], "benchRepeats": 1, "benchThreads": [1]}
# The tool and keep-alive of each phase: every combination once, each mode's balance judged by its unit.
LOAD = {
    "proxy": {"benchTool": "ab", "benchKeepAlive": False},
    "proxy-https": {"benchTool": "ab", "benchKeepAlive": True},
    "dsr": {"benchTool": "ab", "benchKeepAlive": False},
    "l3dsr": {"benchTool": "wrk", "benchKeepAlive": True},
    "nat": {"benchTool": "wrk", "benchKeepAlive": False},
}


def check_results(out: dict, mode: str, matrix: dict = MATRIX, scheme: str = "http", load: str = "") -> None:
    assert out["mode"] == mode
    tool, keepalive = LOAD[load or mode]["benchTool"], LOAD[load or mode]["benchKeepAlive"]
    summary, runs = out["summary"], out["results"]
    threads = matrix["benchThreads"] if mode == "proxy" else [1]  # IPVS is the kernel's: one row per point
    repeats = matrix["benchRepeats"]
    assert {r["scheme"] for r in runs} == {scheme}
    assert [(int(r["lbThreads"]), int(r["concurrency"]), int(r["repeats"])) for r in summary] == [
        (t, c, repeats) for t in threads for c in matrix["benchConcurrency"]
    ]
    assert len(runs) == len(matrix["benchConcurrency"]) * repeats * len(threads)
    # The share estimate assumes the LB forwards what the clients send; an HTTPS proxy does not (it
    # ends the TLS handshakes), so there it reads about 0.89 although every reply crosses the LB.
    through = 0.85 if scheme == "https" else 0.9
    for run in runs:
        assert (run["tool"], run["keepalive"], int(run["clients"])) == (tool, keepalive, CLIENTS), run
        assert int(run["totalRequestsAsked"]) == matrix["benchRequests"][0], run
        if tool == "ab":  # a number of requests; wrk runs for a duration and the table says what completed
            assert int(run["totalRequests"]) == matrix["benchRequests"][0], run
        # Completed, as the webs logged them (wrk, stopped at its duration, leaves up to a request per
        # connection served but not counted).
        extra = sum(int(v) for v in run["requestsPerWeb"].values()) - int(run["totalRequests"])
        assert 0 <= extra <= (0 if tool == "ab" else int(run["concurrency"])), run
        assert sorted(run["startSkewMs"]) == ["client01", "client02"] and run["windowS"] > 0, run
        pct = run["latencyPercentilesMs"]
        assert 0 < pct["p50"] <= pct["p90"] <= pct["p99"], run
        assert ("latencyPercentileBoundsMs" in run and bool(run["latencyPercentileBoundsMs"])) == (tool == "wrk")
        # Round robin, judged by what the mode schedules: no web off the mean by more than 5%.
        assert not [f for f in run["flags"] if f.startswith("unbalanced")], run
        assert int(run["failedRequests"]) == 0 and int(run["non2xxResponses"]) == 0, run
        assert run["requestsPerSecond"] > 0
        if lbmodes.MODES[mode].shares.high < 1:  # the mode's own rule: its responses go around the LB
            assert run["lbResponseShare"] < 0.10, run  # the replies bypass the LB
        else:
            assert through < run["lbResponseShare"] < 1.2, run  # every reply crosses the LB (proxy or NAT)
    served = out["requestsPerWeb"]
    assert sorted(served) == ["web01", "web02"] and all(v > 0 for v in served.values()), served
    assert "| Mode | Tool | Clients | Thread | Concurrency |" in out["resultsTable"]
    assert f"| {tool}, {'keep-alive' if keepalive else 'a connection per request'} | {CLIENTS} |" in out["resultsTable"]


def set_matrix(cli, matrix: dict) -> None:
    """Typed lists go into the stack file itself (`pulumi config set` stores strings, and the
    project's typed config refuses a string where it declares an array)."""
    stack_file = config.stack_file(cli.stack, cli.project_dir)
    doc = yaml.safe_load(stack_file.read_text())
    doc["config"].update({f"l2dsr:{key}": value for key, value in matrix.items()})
    stack_file.write_text(yaml.safe_dump(doc))


def rps_ratios(proxy: list[dict], dsr: list[dict]) -> dict[str, float]:
    """A mode's requests/s over proxy's at each concurrency, per proxy thread count: {"t1-c10": 1.75, ...}."""
    by_concurrency = {int(r["concurrency"]): r["requestsPerSecond"] for r in dsr}
    return {
        f"t{int(p['lbThreads'])}-c{int(p['concurrency'])}": round(
            by_concurrency[int(p["concurrency"])] / p["requestsPerSecond"], 2
        )
        for p in proxy
        if int(p["concurrency"]) in by_concurrency
    }


def lab_objects(virsh: Virsh) -> list[str]:
    prefix = f"l2dsr-{STACK}"
    found = [d for d in virsh.run("list", "--all", "--name").split() if d.startswith(prefix)]
    found += [n for n in virsh.run("net-list", "--all", "--name").split() if n.startswith(prefix)]
    found += [
        line.split()[0] for line in virsh.run("vol-list", "default").splitlines() if line.strip().startswith(prefix)
    ]
    return found


# Units that belong to a role; everything else running on a VM is the OS, the same on every role.
ROLE_UNITS = {
    "nginx.service",
    "haproxy.service",
    "ipvsadm.service",
    "keepalived.service",
    "l2dsr-ipvs.service",
    "l2dsr-net.service",
    "l2dsr-tune.service",
}
EXPECTED_ROLE_UNITS = {
    **{("web", m): {"nginx.service", "l2dsr-net.service"} for m in lbmodes.MODES},
    **{("client", m): {"l2dsr-net.service"} for m in lbmodes.MODES},
    ("lb", "proxy"): {"haproxy.service"},
    ("lb", "dsr"): {"l2dsr-ipvs.service"},
    ("lb", "l3dsr"): {"l2dsr-ipvs.service"},
    ("lb", "nat"): {"l2dsr-ipvs.service"},
}
IPVS_METHOD = {"dsr": "Route", "l3dsr": "Tunnel", "nat": "Masq"}  # ipvsadm -Ln's Forward column


def private_key(cli) -> str:
    return private_key_of(json.loads(cli("stack", "export", "--show-secrets").stdout))


def active_units(ssh: Ssh, address: str) -> set[str]:
    out = ssh.run(address, "systemctl list-units --type=service --state=active --no-legend --plain").stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def started_by_timer(ssh: Ssh, address: str, unit: str) -> bool:
    out = ssh.run(address, f"systemctl show -p TriggeredBy --value {unit}", check=False).stdout
    return any(t.endswith(".timer") for t in out.split())


def lab_ssh(out: dict, key: str) -> Ssh:
    """SSH to the stack's VMs, through their host where it is remote (as the lab itself does)."""
    hosts = host_refs(out)
    return Ssh(
        render.LOGIN_USER, key, via={vm["address"]: hosts[vm["host"]] for vm in out["vms"] if hosts[vm["host"]].remote}
    )


def check_guests(cli, mode: str, tuned: bool = False) -> dict:
    """Inside the guests: exactly each role's services, HAProxy one supervised tree, no OOM kill."""
    out = stack_outputs(cli)
    vms = {vm["name"]: vm for vm in out["vms"]}
    facts: dict = {}
    with KeyFile(private_key(cli)) as key:
        ssh = lab_ssh(out, key)
        os_units = {}
        for name, vm in vms.items():
            active = active_units(ssh, vm["address"])
            expected = EXPECTED_ROLE_UNITS[(vm["role"], mode)] | (
                {"l2dsr-tune.service"} if tuned and vm["role"] == "lb" else set()
            )
            assert active & ROLE_UNITS == expected, (name, sorted(active))
            os_units[name] = active - ROLE_UNITS
            oom = ssh.run(vm["address"], "sudo dmesg | grep -c 'Out of memory' || true").stdout.strip()
            assert oom == "0", f"{name}: {oom} OOM kills"
            facts[name] = ssh.run(vm["address"], "free -m | awk '/^Mem:/ {print $2, $7}'").stdout.split()
        # The OS underneath is the same on every role: nothing of a role hides among "the OS's" units.
        # A unit only some run is allowed only when a timer started it (the OS's schedule: a guest
        # up longer, on a slow or busy host, reaches a timer the others have not).
        common = set.intersection(*os_units.values())
        uneven = {name: sorted(units - common) for name, units in os_units.items() if units - common}
        unexplained = {
            name: [u for u in units if not started_by_timer(ssh, vms[name]["address"], u)]
            for name, units in uneven.items()
        }
        assert not any(unexplained.values()), ("units only some VMs run, not started by a timer", unexplained)
        if mode == "proxy":
            lb = next(vm["address"] for vm in vms.values() if vm["role"] == "lb")
            tree = ssh.run(
                lb, 'for p in $(pgrep -x haproxy); do echo "$p $(ps -o ppid= -p $p) $(cat /proc/$p/cgroup)"; done'
            ).stdout.split("\n")
            procs = [line.split() for line in tree if line.strip()]
            assert len(procs) == 2, tree  # master and one worker, under systemd (-Ws)
            assert all(p[2].endswith("/system.slice/haproxy.service") for p in procs), tree
            master = ssh.run(lb, "systemctl show -p MainPID --value haproxy.service").stdout.strip()
            assert {p[0] for p in procs if p[1] == "1"} == {master}, (tree, master)
            assert [p for p in procs if p[1] == master], tree  # the worker is the master's child
        else:
            check_ipvs_paths(ssh, vms, mode, stack_outputs(cli)["vip"])
    return {name: {"total_mib": int(t), "available_mib": int(a)} for name, (t, a) in facts.items()}


def check_ipvs_paths(ssh: Ssh, vms: dict, mode: str, vip: str) -> None:
    """An IPVS mode as built: no proxy process on the LB, every web behind the mode's forwarding
    method, and each web holding the VIP where its mode says and routing to the clients as it says."""
    lb = next(vm["address"] for vm in vms.values() if vm["role"] == "lb")
    client = next(vm["address"] for vm in vms.values() if vm["role"] == "client")
    assert ssh.run(lb, "pgrep -c -x haproxy || true").stdout.strip() == "0"
    table = ssh.run(lb, "sudo ipvsadm -Ln").stdout
    for web in (vm for vm in vms.values() if vm["role"] == "web"):
        line = next(x for x in table.splitlines() if f"{web['address']}:80" in x)
        assert line.split()[2] == IPVS_METHOD[mode], table
        # `ip -o -4 addr show`: "<n>: <device>    inet <address>/<prefix> ..."
        holders = [
            x.split()[1]
            for x in ssh.run(web["address"], "ip -o -4 addr show").stdout.splitlines()
            if f" {vip}/32 " in x
        ]
        route = ssh.run(web["address"], f"ip route get {client}").stdout
        assert holders == {"dsr": ["lo"], "l3dsr": ["tunl0"], "nat": []}[mode], (web["name"], holders)
        if mode == "nat":
            assert " via " in route, route  # replies go back through the LB
        else:
            assert " via " not in route, route  # on-link: the reply goes straight to the client


def planned(cli, *ops: str) -> list[str]:
    plan = json.loads(cli("preview", "--json").stdout)
    return sorted(step["urn"].split("::")[-1] for step in plan["steps"] if step["op"] in ops)


def replaced_in_plan(cli) -> list[str]:
    return planned(cli, "replace", "create-replacement")


def last_changes(cli) -> dict:
    return json.loads(cli("stack", "history", "--json").stdout)[0]["resourceChanges"]


def domains(virsh: Virsh) -> dict[str, tuple[str, bool] | None]:
    return {vm: virsh.domain(f"l2dsr-{STACK}-{vm}") for vm in ("client01", "lb", "web01", "web02")}


def urn_of(cli, name: str) -> str:
    state = json.loads(cli("stack", "export").stdout)
    return next(r["urn"] for r in state["deployment"]["resources"] if r["urn"].endswith(f"::{name}"))


TUNED = {"lbTuning": "seed", "lbVcpus": 2}


def check_tuning(cli, virsh: Virsh) -> list[str]:
    """The seed's tuning on the LB, as the guest and libvirt show it: vCPU 1 isolated, one queue per
    vCPU with every queue's interrupts on it, the sysctls, txqueuelen, and the vCPUs pinned on the host."""
    key, vms = on_lab(cli)
    with KeyFile(key) as key_file:
        ssh = Ssh(render.LOGIN_USER, key_file)
        facts = ssh.run(
            vms["lb"],
            "cat /sys/devices/system/cpu/isolated; ls -d /sys/class/net/eth0/queues/rx-* | wc -l; "
            "cat /sys/class/net/eth0/tx_queue_len /proc/sys/net/core/netdev_max_backlog /proc/sys/kernel/numa_balancing; "
            "nic=$(basename $(readlink -f /sys/class/net/eth0/device)); "
            'for irq in $(awk -v n=$nic \'$NF ~ "^" n "-(input|output)" {sub(":", "", $1); print $1}\' /proc/interrupts); '
            'do echo "irq $irq $(cat /proc/irq/$irq/smp_affinity_list)"; done',
        ).stdout.split("\n")
    isolated, queues, txqueuelen, backlog, numa = (line.strip() for line in facts[:5])
    irqs = [line.split() for line in facts[5:] if line.startswith("irq ")]
    assert (isolated, queues, txqueuelen, backlog, numa) == ("1", "2", "30000", "9000000", "0"), facts
    assert len(irqs) == 4 and all(cpu == "1" for _, _, cpu in irqs), irqs  # 2 queues x input, output
    pins = virsh.run("vcpupin", f"l2dsr-{STACK}-lb")
    assert [line.split() for line in pins.splitlines() if line.strip()[:1].isdigit()] == [["0", "0"], ["1", "1"]], pins
    assert "rx_queue_size='1024'" in virsh.run("dumpxml", f"l2dsr-{STACK}-lb")
    return facts + pins.splitlines()


def on_lab(cli):
    """(ssh, the VMs by short name) of the e2e stack."""
    vms = {vm["name"].removeprefix(f"l2dsr-{STACK}-"): vm["address"] for vm in stack_outputs(cli)["vms"]}
    return private_key(cli), vms


def bench_again(cli, trigger: str):
    """Rerun only the benchmark (l2dsr:benchTrigger), on the guests as they are: `--target` skips
    their state resources, which would put a guest changed by hand back in place first (so the
    benchmark's own checks are what meets it). The CLI's result, whatever it is."""
    cli("config", "set", "l2dsr:benchTrigger", trigger)
    return cli("up", "--yes", "--skip-preview", "--target", urn_of(cli, "bench-run"), timeout=1800, check=False)


def nothing_left_on(host: simhosts.SimHost) -> list[str]:
    """Domains, volumes, networks and interfaces of the lab on a simulated host."""
    h = Virsh(host.uri)
    found = [f"domain {d}" for d in h.names("list", "--all", "--name")]
    found += [f"volume {v}" for v in h.names("vol-list", "--pool", libvirt.POOL_NAME)]
    found += [f"network {n}" for n in h.names("net-list", "--all", "--name")]
    links = HostRef(host.name, host.address, "root", str(simhosts.key_file())).run("ip -br link").stdout
    found += [f"interface {line.split()[0]}" for line in links.splitlines() if line.startswith(("l2vx-", "l2dsr-"))]
    return found


@dataclass
class Run:
    """One e2e lab's run: its CLI and what it records (written to results/measurements/<name>.json)."""

    cli: object
    virsh: Virsh
    times: dict[str, float] = field(default_factory=dict)
    results: dict[str, dict] = field(default_factory=dict)
    memory: dict[str, dict] = field(default_factory=dict)
    seen: dict[str, list[str]] = field(default_factory=dict)

    @contextmanager
    def timed(self, what: str) -> Iterator[None]:
        """The one way a phase's step is timed: its wall time as `<what>_s` in the record (also when it fails)."""
        start = time.monotonic()
        try:
            yield
        finally:
            self.times[f"{what}_s"] = round(time.monotonic() - start, 1)

    def up(self, phase: str, *args: str, timeout: int = 3600) -> None:
        with self.timed(f"up_{phase}"):
            self.cli("up", "--yes", "--skip-preview", *args, timeout=timeout)


@contextmanager
def e2e_lab(tmp_path, name: str, **config: object) -> Iterator[Run]:
    """The lab stack `e2e` with these overrides (its state under tmp_path); afterwards, whatever happened: destroy, the simulated
    hosts stopped, the record written, and nothing of the lab left on either host."""
    virsh = Virsh(libvirt.URI)
    stale = lab_objects(virsh)
    assert not stale, (
        f"left by an earlier run: {stale}; ./labctl down --force removes this checkout's, and --orphans "
        "also those of a checkout or CI run whose state is gone"
    )
    with lab_stack(tmp_path, STACK, **OWN_ADDRESSES, **config) as cli:
        run = Run(cli, virsh)
        try:
            yield run
        finally:
            with run.timed("destroy"):
                cli("destroy", "--yes", "--skip-preview", timeout=1200)
            cli("stack", "rm", "--yes")
            h2 = next((h for h in simhosts.read() if h.name == "h2"), None)
            try:
                left_on_h2 = nothing_left_on(h2) if h2 else []
            except Exception as e:  # noqa: BLE001 - said below, after the test's own failure if any
                left_on_h2 = [f"cannot tell ({e})"]
            simhosts.down(force=True, states=(f"file://{tmp_path}",))  # this lab's state's objects only
            write_record(run, name)
    assert lab_objects(virsh) == []
    assert left_on_h2 == [], f"left on the simulated host h2 after destroy: {left_on_h2}"
    links = HostRef().run("ip -br link").stdout
    assert interface_name(STACK) not in links, links


def write_record(run: Run, name: str) -> None:
    measured: dict = {"phases": run.times, "memory_after_benchmark_mib": run.memory, "cli_said": run.seen}
    for mode, out in run.results.items():
        measured[f"boot_{mode}"] = out.get("boot")
    for mode, out in run.results.items():
        measured[mode] = {"summary": out.get("summary"), "byteCounters": out.get("byteCounters")}
    if "proxy" in run.results:
        measured["rps_over_proxy"] = {
            mode: rps_ratios(run.results["proxy"]["summary"], out["summary"])
            for mode, out in run.results.items()
            if mode in LOAD and LOAD[mode] == LOAD["proxy"] and mode != "proxy"  # like for like only
        }
    out_dir = paths.PROJECT_DIR / "results" / "measurements"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(measured, indent=1))
    print(f"\n{name} measurements: {json.dumps(measured)[:2000]}")


# A short capacity search (CI's): connections/s at 1 and 128 KiB, trials of 5 s, a 10% precision.
SEARCH = {
    "benchSearch": True,
    "benchSearchTests": ["connections"],
    "benchFileSizesKiB": [1, 128],
    "benchSearchTrialSeconds": 5,
    "benchSearchConfirmSeconds": 8,
    "benchSearchPrecisionPct": 10,
    "benchSearchMaxTrials": 10,
}


NOT_THE_LB = ("a client's CPU", "the clients", "the host's CPUs")  # bounds that say nothing of the LB


def check_capacity(out: dict, mode: str) -> dict[int, float]:
    """Each point found a rate whose trial passed, and the lowest rate above it that was tried failed
    a criterion (or could not be offered: then the clients bound it, said so) within 1.5x of it;
    latency at half of it was measured. Returns each size's capacity."""
    points = out["capacity"]
    assert [(p["mode"], p["test"], int(p["sizeKib"])) for p in points] == [
        (mode, "connections", kib) for kib in SEARCH["benchFileSizesKiB"]
    ], points
    for p in points:
        trials = [t for t in p["trials"] if not t.get("atHalf")]
        assert p["rateRps"] > 0 and [t["passed"] for t in trials if t["offeredRps"] == p["rateRps"]][-1], p
        above = [t for t in trials if t["offeredRps"] > p["rateRps"] and not t["passed"]]
        assert above, ("nothing above the rate found was tried and failed", p["stopped"], trials)
        lowest = min(above, key=lambda t: t["offeredRps"])
        assert lowest["offeredRps"] <= 1.5 * p["rateRps"], (p["rateRps"], lowest)
        assert lowest["failedCriteria"] or lowest["invalid"], lowest
        if lowest["invalid"]:
            assert p["bound"].startswith(NOT_THE_LB), p["bound"]
        assert p["latencyAtHalfMs"]["p99"] > 0 and p["gbps"] > 0, p
    assert "| Mode | Test | Size (KiB) |" in out["capacityTable"], out["capacityTable"]
    return {int(p["sizeKib"]): p["rateRps"] for p in points}
