"""What the benchmark reads around a run, and where.

- From the hypervisor, for every VM at once (one `virsh domstats` per libvirt host): its interface's
  bytes, as the domain sees them. It costs the guests nothing, cannot be late because a guest is
  saturated, and is read right before the load starts and right after it ends.
- From inside each VM (`Readers`): one reading process per VM (bench/reader.sh, under one sudo),
  started once per benchmark over its multiplexed SSH connection, that answers each request with
  CPU (the guest's own view: a saturated client is judged by what it saw), eth0's drops, TCP listen
  drops and orphans (only the guest knows them), a client's open connections to the VIP, and a
  web's nginx counts of served requests and accepted connections. It reads with shell builtins
  where it can: under emulation every process a guest starts costs it CPU, and 27 guests share the
  host's cores, so a reading that started eight processes and a sudo cost a 25-web lab seconds.

The parsing is pure.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import shlex
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import runtime
from runtime.ssh import Ssh, SshError
from runtime.vm import VmRef
from virt.virsh import Virsh, VirshError

BYTES = ("rx_bytes", "tx_bytes")
READER = (Path(__file__).parent / "reader.sh").read_text()
END = "@@end"
SERVED = "sudo grep -c ' /dummy_file ' /var/log/nginx/access.log || true"
# nginx's stub_status (cloudinit/web/l2dsr-status.conf): "server accepts handled requests" then the numbers.
ACCEPTED = "curl -s --max-time 10 http://127.0.0.1/l2dsr-status | awk 'NR == 3 {print $1}'"


def proc_net_tcp(vip: str, port: int) -> str:
    """An IPv4 address and port as /proc/net/tcp writes them: 192.168.16.100:80 -> 6410A8C0:0050."""
    return f"{int.from_bytes(ipaddress.IPv4Address(vip).packed, 'little'):08X}:{port:04X}"


@dataclass(frozen=True)
class Reading:
    """One VM's answer (bench/reader.sh): the first word of each line -> the rest."""

    lines: dict[str, list[str]]

    def counters(self) -> dict[str, int]:
        cpu, drops, listen = self.lines["cpu"], self.lines["drops"], self.lines.get("listen", [])
        return {
            "cpu_total": int(cpu[0]),
            "cpu_idle": int(cpu[1]),
            "rx_dropped": int(drops[0]),
            "tx_dropped": int(drops[1]),
            "listen_drops": int(listen[0]) if len(listen) > 0 else 0,
            "listen_overflows": int(listen[1]) if len(listen) > 1 else 0,
        }

    def web(self) -> WebCounts:
        return WebCounts(int(self.lines["served"][0]), int(self.lines["accepted"][0]))


def parse_reading(text: str, web: bool) -> Reading:
    lines = {}
    for line in text.splitlines():
        word, _, rest = line.partition(" ")
        lines[word] = rest.split()
    for key in ["cpu", "drops", *(["served", "accepted"] if web else [])]:
        if not lines.get(key) or not all(v.isdigit() for v in lines[key][:2]):
            raise ValueError(f"no {key} counts")
    if len(lines["cpu"]) < 2 or len(lines["drops"]) < 2:
        raise ValueError("cpu or drops incomplete")
    return Reading(lines)


class Readers:
    """bench/reader.sh on every VM for the length of a `with` block: read_all() asks them all at once."""

    # The first answer includes the reader's start (a sudo): 27-35 s for 27 VMs at once, measured idle.
    TIMEOUT_S = 120

    def __init__(self, ssh: Ssh, vms: list[VmRef], vip: str, port: int):
        self.ssh, self.vms, self.vip_tcp = ssh, vms, proc_net_tcp(vip, port)
        self.procs: dict[str, subprocess.Popen] = {}

    def command(self, vm: VmRef) -> str:
        script = base64.b64encode(READER.encode()).decode()
        args = [self.vip_tcp if vm.role == "client" else "", "1" if vm.role == "web" else ""]
        return f'sudo bash -c "$(echo {script} | base64 -d)" l2dsr-reader {shlex.join(args)}'

    def __enter__(self) -> Readers:
        for vm in self.vms:
            self.procs[vm.name] = subprocess.Popen(
                self.ssh.argv(vm.address, self.command(vm)),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        return self

    def __exit__(self, *_exc) -> None:
        for proc in self.procs.values():
            try:
                assert proc.stdin is not None
                proc.stdin.write("quit\n")
                proc.stdin.close()
            except (BrokenPipeError, OSError, ValueError):
                pass
        deadline = time.monotonic() + 5
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def read(self, vm: VmRef) -> Reading:
        proc = self.procs[vm.name]
        assert proc.stdin is not None and proc.stdout is not None
        timed_out = threading.Event()

        def give_up() -> None:
            timed_out.set()
            proc.kill()

        timer = threading.Timer(self.TIMEOUT_S, give_up)
        timer.start()
        said: list[str] = []
        try:
            proc.stdin.write("read\n")
            proc.stdin.flush()
            for line in proc.stdout:
                if line.strip() == END:
                    break
                said.append(line)
        except (BrokenPipeError, OSError):
            pass
        finally:
            timer.cancel()
        text = "".join(said)
        try:
            if timed_out.is_set():
                raise ValueError(f"no answer within {self.TIMEOUT_S} s")
            if proc.poll() is not None:
                raise ValueError("its reading process ended")
            return parse_reading(text, vm.role == "web")
        except ValueError as e:
            err = proc.stderr.read() if proc.poll() is not None and proc.stderr else ""
            outcome = f"it did not print its counters ({e})" + (
                "; is nginx running, with l2dsr-status.conf?" if vm.role == "web" else ""
            )
            raise SshError(
                f"{vm.address}: {outcome}", vm.address, "bench/reader.sh", outcome, text + (err or "")
            ) from None

    def read_all(self) -> dict[str, Reading]:
        """Every VM at once."""
        return dict(zip([v.name for v in self.vms], runtime.at_once(self.read, self.vms), strict=True))


_DOMAIN = re.compile(r"^Domain: '(.+)'$")
_NET = re.compile(r"^net\.\d+\.(rx|tx)\.bytes=(\d+)$")


def parse_domstats(text: str) -> dict[str, dict[str, int]]:
    """`virsh domstats --interface`: each domain's bytes over all its interfaces (the domain's view:
    what it received, what it sent)."""
    found: dict[str, dict[str, int]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if m := _DOMAIN.match(line):
            current = found.setdefault(m[1], {k: 0 for k in BYTES})
        elif (m := _NET.match(line)) and current is not None:
            current[f"{m[1]}_bytes"] += int(m[2])
    return found


def domain_bytes(vms: list[VmRef]) -> dict[str, dict[str, int]]:
    """Every VM's interface bytes, read from its libvirt host (one call per host, at once)."""
    by_uri: dict[str, list[VmRef]] = {}
    for vm in vms:
        by_uri.setdefault(vm.uri, []).append(vm)

    def ask(uri: str) -> dict[str, dict[str, int]]:
        return parse_domstats(Virsh(uri).run("domstats", "--interface", *[v.domain for v in by_uri[uri]], timeout=60))

    stats = {domain: v for found in runtime.at_once(ask, by_uri) for domain, v in found.items()}
    missing = [vm.name for vm in vms if vm.domain not in stats]
    if missing:
        raise VirshError(f"libvirt gave no interface counters for {', '.join(missing)} (virsh domstats --interface)")
    return {vm.name: stats[vm.domain] for vm in vms}


_CPU_TIME = re.compile(r"^cpu\.time=(\d+)$")


def domain_cpu_ns(vms: list[VmRef]) -> dict[str, int]:
    """Every VM's CPU time as its hypervisor counts it (ns, all its vCPUs), one call per host at once."""
    by_uri: dict[str, list[VmRef]] = {}
    for vm in vms:
        by_uri.setdefault(vm.uri, []).append(vm)

    def ask(uri: str) -> dict[str, int]:
        found, current = {}, ""
        for line in (
            Virsh(uri).run("domstats", "--cpu-total", *[v.domain for v in by_uri[uri]], timeout=60).splitlines()
        ):
            line = line.strip()
            if m := _DOMAIN.match(line):
                current = m[1]
            elif (m := _CPU_TIME.match(line)) and current:
                found[current] = int(m[1])
        return found

    stats = {domain: ns for found in runtime.at_once(ask, by_uri) for domain, ns in found.items()}
    missing = [vm.name for vm in vms if vm.domain not in stats]
    if missing:
        raise VirshError(f"libvirt gave no CPU time for {', '.join(missing)} (virsh domstats --cpu-total)")
    return {vm.name: stats[vm.domain] for vm in vms}


def busy(after: dict[str, int], before: dict[str, int]) -> float:
    total = after["cpu_total"] - before["cpu_total"]
    return round(1 - (after["cpu_idle"] - before["cpu_idle"]) / total, 3) if total > 0 else 0.0


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in after}


def bytes_of(items: list[dict[str, int]]) -> dict[str, int]:
    """The byte counters of several VMs, summed."""
    return {k: sum(i[k] for i in items) for k in BYTES}


def served(ssh: Ssh, web: VmRef) -> int:
    """Requests for /dummy_file in the web's access log (nginx's `main` format)."""
    return int(ssh.run(web.address, SERVED).stdout.strip() or 0)


@dataclass(frozen=True)
class WebCounts:
    requests: int  # /dummy_file in the access log
    accepted: int  # connections nginx accepted, this reading's own included

    def since(self, before: WebCounts) -> WebCounts:
        """What a run added: the reading's own connection (one per reading) taken off."""
        return WebCounts(self.requests - before.requests, self.accepted - before.accepted - 1)
