"""`./labctl status`: one table of what runs, from the stack's outputs and what each host's libvirt
and each guest answered (pure: the reading is hypervisor/status.py's). What could not be read is
said in its cell and in the notes, never guessed."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

UNREAD = "?"


@dataclass(frozen=True)
class Nic:
    tap: str  # the host side of the VM's NIC (virsh domiflist's Interface)
    mac: str


@dataclass(frozen=True)
class Domain:
    """What one host's libvirt said of a domain: its state and NICs, or why it could not say."""

    state: str = ""
    nics: tuple[Nic, ...] = ()
    error: str = ""


@dataclass(frozen=True)
class VmStatus:
    name: str
    role: str
    host: str
    state: str
    address: str
    mac: str
    tap: str
    services: str  # "all N running", "nginx.service inactive", or why it is not known


@dataclass(frozen=True)
class Status:
    stack: str
    mode: str
    health_check: str
    vms: tuple[VmStatus, ...]
    tunnels: dict[str, str] = field(default_factory=dict)  # host: its VXLAN interface and the ends it floods to
    result: str = ""
    notes: tuple[str, ...] = ()

    def as_json(self) -> dict:
        doc = asdict(self)
        doc["healthCheck"] = doc.pop("health_check")
        return doc


def parse_domstate(text: str) -> str:
    return text.strip().splitlines()[0].strip() if text.strip() else UNREAD


def parse_domiflist(text: str) -> tuple[Nic, ...]:
    """`virsh domiflist DOMAIN`: Interface, Type, Source, Model, MAC (with or without its header)."""
    nics = []
    for line in text.splitlines():
        cols = line.split()
        if len(cols) == 5 and re.fullmatch(r"(?:[0-9a-f]{2}:){5}[0-9a-f]{2}", cols[4]):
            nics.append(Nic(cols[0], cols[4]))
    return tuple(nics)


def parse_units(units: tuple[str, ...], text: str) -> dict[str, str]:
    """`systemctl is-active U1 U2 ...` prints one state per unit, in order."""
    states = text.split()
    return {u: (states[i] if i < len(states) else UNREAD) for i, u in enumerate(units)}


def services_cell(units: tuple[str, ...], found: dict[str, str]) -> str:
    if not units:
        return "none expected"
    down = [f"{u} {found.get(u, UNREAD)}" for u in units if found.get(u) != "active"]
    return ", ".join(down) if down else f"all {len(units)} running"


def result_line(summary: list[dict] | None) -> str:
    """The newest result in a line: its points, the best point's rate and what failed."""
    if not summary:
        return "no result yet"
    best = max(summary, key=lambda row: row["requestsPerSecond"])
    failed = sum(int(row["failedRequests"]) + int(row["non2xxResponses"]) for row in summary)
    flagged = sum(1 for row in summary if row.get("flags"))
    return (
        f"{best['mode']}, {best['tool']}, {best['clients']} clients, {len(summary)} points: best "
        f"{best['requestsPerSecond']:.0f} req/s at concurrency {best['concurrency']} (LB threads "
        f"{best['lbThreads']}); {failed} failed; {flagged} flagged"
    )


def domain_from(answer: dict) -> Domain:
    """A domain's answers (`domstate` and `domiflist` as virsh printed them, or `error`)."""
    if "error" in answer:
        if "failed to get domain" in answer["error"] or "Domain not found" in answer["error"]:
            return Domain(state="missing")
        return Domain(error=answer["error"])
    return Domain(state=parse_domstate(answer.get("domstate", "")), nics=parse_domiflist(answer.get("domiflist", "")))


def vm_rows(outputs: dict, answers: dict) -> tuple[tuple[VmStatus, ...], tuple[str, ...]]:
    """One row per VM of the stack's `vms` output, and a note for everything that could not be read."""
    rows, notes = [], []
    for vm in outputs.get("vms") or []:
        short, host = vm["name"].rsplit("-", 1)[-1], vm.get("host") or "local"
        dom = domain_from(answers["domains"].get(vm["name"], {"error": "not asked"}))
        if dom.error:
            notes.append(f"{short}: libvirt on {host} did not say ({dom.error})")
        elif dom.state == "missing":
            notes.append(f"{short}: no domain {vm['name']} on {host} (removed by hand? ./labctl up puts it back)")
        units = tuple(vm.get("services") or ())
        said = answers["units"].get(vm["name"])
        if dom.state != "running":
            services = "-"
        elif not units:
            services = UNREAD  # nothing to ask: the outputs do not say what it runs
        elif said is None or "error" in said:
            why = said["error"] if said else "not asked"
            services = f"unknown ({why})"
            notes.append(f"{short}: its services are not known ({why})")
        else:
            services = services_cell(units, parse_units(units, said.get("stdout", "")))
        nic = dom.nics[0] if dom.nics else Nic(UNREAD, UNREAD)
        rows.append(VmStatus(short, vm["role"], host, dom.state or UNREAD, vm["address"], nic.mac, nic.tap, services))
    return tuple(rows), tuple(notes)


# The component a VM's domain is a child of, in its URN's type chain: the VM's role.
ROLE_OF_COMPONENT = {"l2dsr:lab:WebTier": "web", "l2dsr:lab:LoadBalancer": "lb", "l2dsr:lab:Clients": "client"}
HALF_BUILT = (
    "the stack's outputs are not written yet (its first up has not finished, or was stopped): the VMs "
    "are its state's domains; their addresses and services are known once an up finishes"
)


def host_of_uri(uri: str) -> str:
    return "local" if uri.startswith("qemu:///") else uri.split("://", 1)[-1].split("/", 1)[0]


def outputs_from_state(state: dict) -> dict:
    """What a half-built stack's state says of its VMs (each Domain resource's name and libvirt URI,
    its role from its component), in the `vms` and `hosts` outputs' shape, addresses unknown."""
    vms, uris = [], []
    for r in state.get("deployment", {}).get("resources") or []:
        name = (r.get("outputs") or {}).get("name")
        if not r["type"].endswith(":Domain") or not name:
            continue
        chain = r["urn"].split("::")[2].split("$")
        role = next((ROLE_OF_COMPONENT[t] for t in chain if t in ROLE_OF_COMPONENT), UNREAD)
        uri = r["outputs"].get("uri", "")
        uris += [uri] if uri not in uris else []
        vms.append({"name": name, "role": role, "address": UNREAD, "host": host_of_uri(uri), "services": []})
    hosts = [{"name": host_of_uri(u), "uri": u, "address": "", "user": "", "identityFile": ""} for u in uris]
    return {"vms": sorted(vms, key=lambda v: v["name"]), "hosts": hosts, "halfBuilt": True} if vms else {}


def known_vms(outputs: dict, state: dict) -> dict:
    """The outputs, or for a half-built stack (no `vms` output yet) what its state says of its VMs."""
    return outputs if outputs.get("vms") else {**outputs, **outputs_from_state(state)}


def assemble(stack: str, outputs: dict, answers: dict, tunnel: str) -> Status:
    """The status from the stack's outputs and the raw answers of its hosts and guests (recorded as
    they came: tests/views/ holds real ones)."""
    rows, notes = vm_rows(outputs, answers)
    notes = ((HALF_BUILT,) if outputs.get("halfBuilt") else ()) + notes
    tunnels = {}
    for host, said in sorted((answers.get("tunnels") or {}).items()):
        if "error" in said:
            tunnels[host] = f"unknown ({said['error']})"
            notes += (f"the tunnel on {host}: {said['error']}",)
        else:
            tunnels[host] = tunnel_cell(tunnel, said.get("link", ""), said.get("fdb", ""))
    return Status(
        stack=stack,
        mode=outputs.get("mode", ""),
        health_check=outputs.get("healthCheck", ""),
        vms=rows,
        tunnels=tunnels,
        result=result_line(outputs.get("summary")),
        notes=notes,
    )


def table(status: Status) -> str:
    head = ("VM", "ROLE", "HOST", "STATE", "ADDRESS", "MAC", "TAP", "SERVICES")
    body = [(v.name, v.role, v.host, v.state, v.address, v.mac, v.tap, v.services) for v in status.vms]
    widths = [max(len(str(r[i])) for r in (head, *body)) for i in range(len(head))]
    lines = [
        f"stack {status.stack}: mode {status.mode or UNREAD}, health check {status.health_check or UNREAD}",
        "",
        *("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in (head, *body)),
    ]
    if status.tunnels:
        lines += ["", "tunnels:", *(f"  {h}: {t}" for h, t in sorted(status.tunnels.items()))]
    lines += ["", f"newest result: {status.result or 'no result yet'}"]
    if status.notes:
        lines += ["", "could not read:", *(f"  {n}" for n in status.notes)]
    return "\n".join(lines) + "\n"


def tunnel_cell(iface: str, link: str, fdb: str) -> str:
    """A host's VXLAN interface (`ip -br link show IFACE`) and the other hosts its flood entries name
    (`bridge fdb show dev IFACE`)."""
    if not link.strip():
        return f"{iface} missing"
    state = link.split()[1] if len(link.split()) > 1 else UNREAD
    ends = sorted({m.group(1) for m in re.finditer(r"^00:00:00:00:00:00 .*?dst (\S+)", fdb, re.M)})
    return f"{iface} {state}, floods to {', '.join(ends) if ends else 'no host'}"
