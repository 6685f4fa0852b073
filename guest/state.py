"""What a running guest must show of what its role set up, and how to put it back in place.

Pure: from the same role set-up the user-data is rendered from (guest/render.py), so the two cannot
disagree. Read at every preview by the guest's state resource (resources/gueststate.py):
- its role's services running (l2dsr-net, nginx, haproxy, keepalived, l2dsr-ipvs ...);
- every sysctl its files set (the seed's profile, the webs' ARP settings), as the kernel reads them;
- the addresses and routes of its addressing script (the webs' VIP on lo, the routes to the other
  subnet), and the LB's own VIP and second address on eth0;
- on the LB, what its mode says of its balancer (lbmodes: the IPVS service and real servers, or
  HAProxy's servers and threads); on a web, /dummy_file served whole.
The repair re-applies what the guest already has (cloud-init wrote the files): the sysctls, the
addressing script, and a restart of the role's services; no file is rewritten, no VM rebuilt.
"""

from __future__ import annotations

import base64
import re

from guest.render import NGINX_ROOT, role_files, role_setup
from lab.addressing import AddressPlan, Guest
from lab.files import Check
from lab.spec import LabSpec
from lbmodes import Mode

NET_SCRIPT = "/usr/local/sbin/l2dsr-net"
_ADDR = re.compile(r"^ip addr replace (\S+) dev (\S+)$")
_ROUTE = re.compile(r"^ip route replace (\S+) dev (\S+)$")


def sysctl_checks(text: str) -> list[Check]:
    """A sysctl.d file's settings; `-` lines (those the kernel may refuse) are not checked."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "-")) or "=" not in line:
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        # Not the shell's own `read` from /proc/sys: it reads a byte at a time, and a sysctl file
        # answers only its first byte's read (found: '5' for 500000).
        out.append(Check(f"sysctl {key}", f"sysctl -n {key}", " ".join(value.split())))
    return out


def net_checks(lines: tuple[str, ...]) -> list[Check]:
    out = []
    for line in lines:
        if m := _ADDR.match(line):
            address, dev = m.groups()
            out.append(Check(f"{address} on {dev}", f"ip -o -4 addr show dev {dev} | grep -c ' inet {address} '", "1"))
        elif m := _ROUTE.match(line):
            dest, dev = m.groups()
            out.append(
                Check(
                    f"route to {dest} on {dev}",
                    f"ip -4 route show {dest} | awk '{{print $1, $2, $3}}'",
                    f"{dest} dev {dev}",
                )
            )
    return out


def role_units(spec: LabSpec, mode: Mode, plan: AddressPlan, guest: Guest) -> tuple[str, ...]:
    """The systemd units a guest's role runs (its addressing first when it has one): what its state
    checks and what `./labctl status` asks (the `vms` output's `services`)."""
    setup = role_setup(spec, mode, plan, guest)
    return (*(("l2dsr-net.service",) if setup.net else ()), *setup.units)


def checks(spec: LabSpec, mode: Mode, plan: AddressPlan, guest: Guest) -> tuple[Check, ...]:
    setup = role_setup(spec, mode, plan, guest)
    files, _ = role_files(spec, mode, plan, guest)
    out = [
        Check(f"{unit} running", f"systemctl is-active {unit}", "active")
        for unit in role_units(spec, mode, plan, guest)
    ]
    # systemd-sysctl applies /etc/sysctl.d in file-name order, a later file's key over an earlier
    # one's (the seed's LB tuning raises the profile's netdev_max_backlog): one check per key, the last.
    sysctls: dict[str, Check] = {}
    for f in sorted((f for f in files if f.path.startswith("/etc/sysctl.d/")), key=lambda f: f.path):
        sysctls.update((c.what, c) for c in sysctl_checks(f.content))
    out += sysctls.values()
    out += net_checks(setup.net)
    out += net_checks(
        tuple(f"ip addr replace {extra} dev eth0" for extra in guest.extra)
    )  # the LB's VIP, its second subnet
    if guest.role == "lb":
        out += mode.lb_checks(spec, plan)
    if guest.role == "web":
        size = spec.bench_file_size_kib * 1024
        out.append(
            Check(
                f"{NGINX_ROOT}/dummy_file served",
                "curl -s -o /dev/null --max-time 5 -w '%{http_code} %{size_download}' http://127.0.0.1/dummy_file",
                f"200 {size}",
            )
        )
    return tuple(out)


def repair_command(spec: LabSpec, mode: Mode, plan: AddressPlan, guest: Guest) -> str:
    """Re-apply the role in place from the files on the guest: sysctls, addressing, services. The
    files the benchmark rewrites on the LB (the mode's retune: HAProxy's threads) are written back
    first as deployed: an interrupted benchmark may have left a step's."""
    setup = role_setup(spec, mode, plan, guest)
    steps = []
    retune = mode.retune(spec, plan, mode.lb_threads(spec)) if guest.role == "lb" else None
    for f in retune.files if retune else ():
        data = base64.b64encode(f.content.encode()).decode()
        steps.append(
            f"echo {data} | base64 -d > {f.path}.l2dsr && chmod {f.permissions} {f.path}.l2dsr && mv {f.path}.l2dsr {f.path}"
        )
    steps.append("systemctl restart systemd-sysctl.service")
    if setup.net:
        steps.append(NET_SCRIPT)
    steps += [f"ip addr replace {extra} dev eth0" for extra in guest.extra]
    if setup.units:
        steps.append(f"systemctl restart {' '.join(setup.units)}")
    return "sudo sh -c '" + " && ".join(steps) + "'"


MARK = "@l2dsr-check"
SYSCTLS = "@l2dsr-sysctls"
_SYSCTL = "sysctl -n "


def probe_script(items: tuple[Check, ...]) -> str:
    """One script: every sysctl read by one `sysctl` (`key = value` lines after `@l2dsr-sysctls`; a
    process per key cost seconds of an emulated CPU at every preview), then per other check
    `@l2dsr-check <index>` and what its command printed."""
    keys = [c.command.removeprefix(_SYSCTL) for c in items if c.command.startswith(_SYSCTL)]
    lines = [f"echo {SYSCTLS}; sysctl -e {' '.join(keys)} 2>/dev/null"] if keys else []
    lines += [
        f"echo {MARK} {i}; {{ {c.command}; }} 2>/dev/null"
        for i, c in enumerate(items)
        if not c.command.startswith(_SYSCTL)
    ]
    return "\n".join(lines) + "\n"


def observed(output: str, items: tuple[Check, ...]) -> dict[str, str]:
    """probe_script's output: each check's `what` -> the first line its command printed ("" if
    none), tabs and runs of spaces as one (as sysctl.d files write values)."""
    by_key = {c.command.removeprefix(_SYSCTL): c.what for c in items if c.command.startswith(_SYSCTL)}
    found: dict[str, str] = {}
    current, in_sysctls = None, False
    for line in output.splitlines():
        if line == SYSCTLS:
            in_sysctls, current = True, None
        elif line.startswith(MARK + " "):
            in_sysctls = False
            index = line.split()[1]
            current = items[int(index)].what if index.isdigit() and int(index) < len(items) else None
            if current is not None:
                found[current] = ""
        elif in_sysctls:
            key, _, value = line.partition(" = ")
            if key.strip() in by_key:
                found[by_key[key.strip()]] = " ".join(value.split())
        elif current is not None and not found[current]:
            found[current] = " ".join(line.split())
    return {c.what: found.get(c.what, "") for c in items}


def summary(found: list[str], shown: int = 4) -> str:
    """Differences for one line of a message: the first few, then how many more."""
    more = f"; and {len(found) - shown} more" if len(found) > shown else ""
    return "; ".join(found[:shown]) + more


def differences(items: tuple[Check, ...], seen: dict[str, str]) -> list[str]:
    """Each check the guest does not meet, as `what: expected X, found Y`."""
    return [
        f"{c.what}: expected {c.expect!r}, found {seen.get(c.what, '')!r}"
        for c in items
        if seen.get(c.what, "") != c.expect
    ]
