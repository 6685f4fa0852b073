"""`./labctl status`, `capture` and `graph`: what the lab runs, its frames and its picture.

Outside the lab's namespace this reads the stack (its outputs, its key) with the pulumi CLI, as
`./labctl ssh` does; status and capture then run inside it (`--exec`), where the guests' addresses,
the taps and each host's SSH are. What they show is views/'s (pure); here is only the asking."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from guest.render import LOGIN_USER
from hypervisor import libvirt, paths, pulumi_cli
from hypervisor.progress import StepFailed, say
from hypervisor.vmssh import find_vm, host_refs, key_in, read_stack
from runtime import at_once
from runtime.hostshell import HostError, HostRef
from runtime.ssh import KeyFile, Ssh, SshError
from views import capture as cap
from views import graph, status
from virt.tunnel import interface_name
from virt.virsh import Virsh, VirshError

ASK_TIMEOUT_S = 30  # a host or guest that does not answer in this is said so, not waited for (a busy host: seconds)


def run_inside(rec: libvirt.HostRecord | None, what: str, plan: dict) -> int:
    inner = [*libvirt.in_namespace(rec), str(pulumi_cli.venv_python()), "-m", "hypervisor.inspection", "--exec", what]
    return subprocess.call([*inner, json.dumps(plan)], cwd=paths.PROJECT_DIR)


def stack_and_flags(args: list[str], flags: tuple[str, ...]) -> tuple[str, set[str]]:
    unknown = [a for a in args if a.startswith("-") and a not in flags]
    if unknown or len([a for a in args if not a.startswith("-")]) > 1:
        raise StepFailed(f"unknown arguments {' '.join(unknown or args)}: see ./labctl help")
    stack = next((a for a in args if not a.startswith("-")), os.environ.get("L2DSR_STACK", "lab"))
    return stack, {a for a in args if a in flags}


# ---- status ---------------------------------------------------------------------------------------


def cmd_status(args: list[str]) -> int:
    stack, flags = stack_and_flags(args, ("--json",))
    rec = libvirt.read_record()
    outputs, state = read_stack(stack, rec)
    outputs = status.known_vms(outputs, state)  # half-built: the state's domains
    if not outputs.get("vms"):
        raise StepFailed(f"stack {stack} has no VMs yet, in its outputs or its state (./labctl up {stack})")
    key = key_in(state)
    with KeyFile(key or "none") as key_file:
        plan = {"stack": stack, "outputs": outputs, "key": key_file if key else "", "json": bool(flags)}
        return run_inside(rec, "status", plan)


def first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][-240:]


def ask_domain(uri: str, domain: str) -> dict:
    """What the domain's host says: its state and NICs as virsh printed them, or the error."""
    virsh = Virsh(uri)
    try:
        return {
            "domstate": virsh.ask("domstate", domain, timeout=ASK_TIMEOUT_S),
            "domiflist": virsh.ask("domiflist", domain, timeout=ASK_TIMEOUT_S),
        }
    except VirshError as e:
        return {"error": first_line(e)}


def ask_units(ssh: Ssh, vm: dict) -> dict:
    """`systemctl is-active` of the VM's role units, as the guest printed it, or why it could not."""
    try:
        done = ssh.run(
            vm["address"], "systemctl is-active " + " ".join(vm["services"]), timeout=ASK_TIMEOUT_S, check=False
        )
    except SshError as e:
        return {"error": first_line(e)}
    if done.returncode == 255:
        return {"error": f"SSH could not log in: {done.stderr.strip()[-200:]}"}
    return {"stdout": done.stdout}


def ask_tunnel(ref: HostRef, iface: str) -> dict:
    try:
        return {
            "link": ref.run(f"ip -br link show {iface}", timeout=ASK_TIMEOUT_S, check=False).stdout,
            "fdb": ref.run(f"bridge fdb show dev {iface}", timeout=ASK_TIMEOUT_S, check=False).stdout,
        }
    except HostError as e:
        return {"error": first_line(e)}


def gather_answers(stack: str, outputs: dict, key_file: str) -> dict:
    """Every host's libvirt, every running guest and (several hosts) every tunnel end asked at once,
    each bounded: the raw answers status.assemble reads."""
    uris = {h["name"]: h["uri"] for h in outputs.get("hosts") or []}
    vms = outputs["vms"]
    domains = at_once(lambda v: ask_domain(uris.get(v["host"], libvirt.URI), v["name"]), vms)
    answers: dict = {"domains": dict(zip((v["name"] for v in vms), domains, strict=True)), "units": {}, "tunnels": {}}
    refs = host_refs(outputs)
    running = [
        v
        for v, d in zip(vms, domains, strict=True)
        if v.get("services") and status.parse_domstate(d.get("domstate", "")) == "running"
    ]
    if key_file:
        via = {v["address"]: refs[v["host"]] for v in vms if v.get("host") in refs and refs[v["host"]].remote}
        ssh = Ssh(LOGIN_USER, key_file, connect_timeout=ASK_TIMEOUT_S, via=via)
        units = at_once(lambda v: ask_units(ssh, v), running)
    else:
        units = [{"error": "the stack's key is not in its state"} for _ in running]
    answers["units"] = {v["name"]: u for v, u in zip(running, units, strict=True)}
    if len(refs) > 1 and not outputs.get("halfBuilt"):  # a half-built stack's hosts are only URIs
        names = sorted(refs)
        ends = at_once(lambda h: ask_tunnel(refs[h], interface_name(stack)), names)
        answers["tunnels"] = dict(zip(names, ends, strict=True))
    return answers


def gather_status(stack: str, outputs: dict, key_file: str) -> status.Status:
    return status.assemble(stack, outputs, gather_answers(stack, outputs, key_file), interface_name(stack))


def exec_status(plan: dict) -> int:
    found = gather_status(plan["stack"], plan["outputs"], plan["key"])
    print(
        json.dumps(found.as_json(), indent=1) if plan["json"] else status.table(found),
        end="" if not plan["json"] else "\n",
    )
    return 0


# ---- capture --------------------------------------------------------------------------------------


def cmd_capture(args: list[str]) -> int:
    try:
        wanted = cap.parse_args(args, sys.stdout.isatty())
    except cap.CaptureError as e:
        raise StepFailed(str(e)) from None
    stack = os.environ.get("L2DSR_STACK", "lab")
    rec = libvirt.read_record()
    outputs, state = read_stack(stack, rec, secrets=False)
    outputs = status.known_vms(outputs, state)
    vm, host = find_vm(outputs, wanted.vm)
    uri = next((h["uri"] for h in outputs.get("hosts") or [] if h["name"] == vm.get("host")), libvirt.URI)
    plan = {"capture": wanted.__dict__, "domain": vm["name"], "uri": uri, "host": host.__dict__}
    return run_inside(rec, "capture", plan)


def capture_command(plan: dict) -> tuple[HostRef, str]:
    """Where tcpdump runs (the VM's host) and its command line, the tap asked of that host's libvirt."""
    wanted = cap.Capture(**plan["capture"])
    host = HostRef(**plan["host"])
    try:
        nics = status.parse_domiflist(Virsh(plan["uri"]).ask("domiflist", plan["domain"], timeout=ASK_TIMEOUT_S))
        tap = cap.tap_of([(n.tap, n.mac) for n in nics], wanted.interface, [f"eth{i}" for i in range(len(nics))])
    except (VirshError, cap.CaptureError) as e:
        raise StepFailed(f"capture on {plan['domain']}: {e}") from None
    if not (host.remote or shutil.which("tcpdump")):
        raise StepFailed("tcpdump is not installed here: ./labctl setup installs it")
    return host, cap.tcpdump_command(wanted, tap)


def exec_capture(plan: dict) -> int:
    host, command = capture_command(plan)
    wanted = cap.Capture(**plan["capture"])
    argv = host.argv(command)
    say(f"capture: {command} on {host.where()} (the host side of {plan['domain']}'s NIC)")
    if wanted.write:
        with open(wanted.write, "wb") as out:
            rc = subprocess.call(argv, stdout=out)
    else:
        rc = subprocess.call(argv)
    if rc == 127:
        raise StepFailed(f"tcpdump is not installed on {host.where()}: install it there (apt install tcpdump)")
    return 0 if rc in (0, 124) else rc  # 124: timeout ended it, as asked


# ---- graph ----------------------------------------------------------------------------------------


def newest_counters(outputs: dict) -> list[dict]:
    """Each run's per-VM counters of the stack's newest result (its resultsDir's result.json)."""
    path = Path(outputs.get("resultsDir") or "") / "result.json"
    if not outputs.get("resultsDir") or not path.is_file():
        return []
    return [run.get("counters") or {} for run in json.loads(path.read_text()).get("runs", [])]


def graph_of(stack: str, outputs: dict) -> str:
    nodes = [graph.Node(v["name"].rsplit("-", 1)[-1], v["role"], v.get("host", "")) for v in outputs["vms"]]
    tunnel = interface_name(stack) if len(outputs.get("hosts") or []) > 1 else ""
    return graph.dot(stack, outputs["mode"], nodes, graph.traffic(newest_counters(outputs)), tunnel)


def render(dot_text: str, out: Path) -> Path:
    """DOT, and an SVG and a PNG beside it when Graphviz's `dot` is installed (./labctl setup does)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".dot").write_text(dot_text)
    if shutil.which("dot"):
        for fmt in ("svg", "png"):
            subprocess.run(
                ["dot", f"-T{fmt}", "-o", str(out.with_suffix(f".{fmt}"))], input=dot_text, text=True, check=True
            )
    return out


def cmd_graph(args: list[str]) -> int:
    stack, _ = stack_and_flags(args, ())
    outputs, _ = read_stack(stack, libvirt.read_record(), secrets=False)
    if not outputs.get("vms"):
        raise StepFailed(
            f"stack {stack} has no VMs in its outputs: its first up has not finished (./labctl up {stack})"
        )
    out = render(graph_of(stack, outputs), paths.PROJECT_DIR / "results" / f"{stack}-graph")
    made = [p.name for p in sorted(out.parent.glob(f"{out.name}.*"))]
    say(
        f"graph of {stack} ({outputs['mode']}): {', '.join(made)} in {out.parent}"
        + ("" if shutil.which("dot") else " (no `dot` here: ./labctl setup installs Graphviz)")
    )
    return 0


if __name__ == "__main__" and sys.argv[1:2] == ["--exec"]:
    sys.exit({"status": exec_status, "capture": exec_capture}[sys.argv[2]](json.loads(sys.argv[3])))
