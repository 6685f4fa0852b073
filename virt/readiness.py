"""Is a VM ready? Watched from the host: its console, its domain state, then SSH and cloud-init.

The first certain failure ends the wait at once with one readable message: the VM, what failed, and
the lines that show it (cloud-init's status, failed units, the journal's errors, the end of
cloud-init's output, the end of the console). Certain failures: a kernel panic or an out-of-memory
kill on the console, a domain that stopped, cloud-init ending in error, no SSH within the boot
budget. A boot that stops making progress (console silent, SSH silent) is reset once, logged,
before it is declared failed.

The waits of one stack share a verdict: when one VM fails, the others stop waiting within seconds.
Boots take turns (`BootSlots`): a bounded number of the guests an `up` creates boot at once on
their libvirt host (slots live in the provider process), the rest wait, defined but not started,
so 27 emulated boots do not thrash two cores.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.ssh import Ssh, SshError
from engine import runtime
from virt.virsh import Virsh, VirshError

# Measured here (2 cores, software emulation): one guest alone takes 80-96 s from start to
# cloud-init done, nearly all of it on its one vCPU; four 1-vCPU guests at once 194-212 s on 2 cores.
# So a boot costs about 90 CPU-seconds under TCG, and guests booting together share the host's cores.
TCG_BOOT_CPU_S = 90.0
KVM_BOOT_CPU_S = 30.0  # not measured here (no KVM): a generous third of the emulated cost
BUDGET_MARGIN = 4.0  # the budget is this many expected boots, plus a fixed allowance (a busy host)
BUDGET_FIXED_S = 60.0
POLL_S = 2.0
SSH_PROBE_S = 45.0

FATAL_CONSOLE = (
    (re.compile(r"Kernel panic - not syncing.*"), "kernel panic"),
    (re.compile(r"Out of memory: Killed process \d+ \(\S+\).*"), "out of memory: the kernel killed a process"),
)
SSHD_STARTED = "Started ssh.service"  # systemd's status line on the console
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")

REPORT_COMMAND = (
    "sudo sh -c 'cloud-init status --long 2>&1; "
    'echo "--- failed units"; systemctl --failed --no-legend --plain 2>&1; '
    # A service's own complaint (nginx -t, haproxy -c) is on its stderr: info, not err, in the journal.
    'for u in $(systemctl --failed --no-legend --plain | cut -d" " -f1 | grep -v ^cloud-); do '
    'echo "--- journal of $u"; journalctl -b -u $u -n 6 --no-pager -o cat 2>&1; done; '
    'echo "--- commands (set -x) and errors in /var/log/cloud-init-output.log"; '
    'grep -E "^[+] |[Ee]rror|Invalid|[Ff]ailed" /var/log/cloud-init-output.log | tail -n 8\''
)
FACTS_COMMAND = "cat /proc/sys/kernel/random/boot_id; free -m | awk '/^Mem:/ {print $2, $7}'"


class NotReady(runtime.LabFailure):
    pass


@dataclass(frozen=True)
class BootingGuest:
    name: str  # role-level name (web01)
    domain: str
    address: str
    final_message: str  # what cloud-init prints on the console when it is done (render.user_data)
    console_log: str


@dataclass(frozen=True)
class Ready:
    seconds: float
    boot_id: str
    memory_total_mib: int
    memory_available_mib: int
    resets: int
    cpu_seconds: float  # the domain's CPU time from start to ready (libvirt's cpu.time): a boot's cost
    waited_s: float  # time spent waiting for a boot slot before the start

    def as_dict(self) -> dict:
        return asdict(self)


def boot_budget_s(domain_type: str, vcpus_running: int, host_cpus: int) -> float:
    """How long a boot may take before it has certainly failed: expected boot time x margin + allowance.

    The expected time is the boot's CPU cost stretched by how many guest vCPUs share each host core.
    """
    per_boot = TCG_BOOT_CPU_S if domain_type == "qemu" else KVM_BOOT_CPU_S
    share = max(1.0, vcpus_running / max(1, host_cpus))
    return round(BUDGET_MARGIN * per_boot * share + BUDGET_FIXED_S)


def stall_limit_s(budget_s: float) -> float:
    """A console silent this long, with no SSH answer either, is a hung boot."""
    return max(120.0, budget_s / 3)


def fatal_in_console(text: str) -> str | None:
    """The first fatal kernel message in console text, as `what: line`."""
    for line in clean(text).splitlines():
        for pattern, what in FATAL_CONSOLE:
            m = pattern.search(line)
            if m:
                return f"{what} ({m.group(0).strip()})"
    return None


def clean(text: str) -> str:
    return _ANSI.sub("", text)


def tail(text: str, lines: int) -> list[str]:
    return [line for line in clean(text).splitlines() if line.strip()][-lines:]


def cloud_init_state(status_text: str) -> str:
    """running | done | error | unknown, from `cloud-init status --long` (degraded done counts as done)."""
    m = re.search(r"^status: (\w+)", status_text, re.M)
    if not m:
        return "unknown"
    return {"done": "done", "error": "error", "running": "running", "not": "running"}.get(m.group(1), "unknown")


class _Verdicts:
    """The first failure of each group (a stack's VMs): the other waits of the group stop on it."""

    def __init__(self) -> None:
        self._first: dict[str, str] = {}
        self._lock = threading.Lock()

    def fail(self, group: str, vm: str) -> None:
        with self._lock:
            self._first.setdefault(group, vm)

    def failed_first(self, group: str, vm: str) -> str | None:
        with self._lock:
            other = self._first.get(group)
        return other if other and other != vm else None


VERDICTS = _Verdicts()


class BootSlots:
    """At most `size` guests of one libvirt host booting at once (from start to cloud-init done)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._booting: dict[str, set[str]] = {}

    def booting(self, host: str) -> int:
        with self._cond:
            return len(self._booting.get(host, ()))

    @contextmanager
    def hold(self, host: str, size: int, vm: str, group: str) -> Iterator[float]:
        """Wait (cancellably, and not past a failure in the group) for a slot; yields the wait."""
        start = time.monotonic()
        next_note = start
        with self._cond:
            while len(self._booting.setdefault(host, set())) >= size:
                runtime.check_cancelled(f"{vm}: waiting for a boot slot")
                other = VERDICTS.failed_first(group, vm)
                if other:
                    raise NotReady(f"{vm}: not started: {other} failed first (see its error)")
                if time.monotonic() >= next_note:
                    next_note = time.monotonic() + 15
                    runtime.log(
                        f"{vm}: waiting to boot, {len(self._booting[host])} of {size} boot slots busy, "
                        f"{time.monotonic() - start:.0f} s",
                        ephemeral=True,
                    )
                self._cond.wait(1.0)
            self._booting[host].add(vm)
        try:
            yield time.monotonic() - start
        finally:
            with self._cond:
                self._booting[host].discard(vm)
                self._cond.notify_all()


BOOT_SLOTS = BootSlots()


def default_boot_slots(host_cpus: int) -> int:
    """One emulated boot per host core: measured, 2 at once on 2 cores take ~90 s each, 4 at once
    ~220 s each (more CPU per boot, not less: they contend)."""
    return max(1, host_cpus)


def domain_cpu_seconds(virsh: Virsh, domain: str) -> float | None:
    """The domain's CPU time so far (`virsh domstats --cpu-total`: cpu.time, ns), None if not given."""
    try:
        out = virsh.run("domstats", "--cpu-total", domain, timeout=30)
    except VirshError:
        return None
    m = re.search(r"cpu\.time=(\d+)", out)
    return int(m.group(1)) / 1e9 if m else None


def boot(
    guest: BootingGuest,
    ssh: Ssh,
    virsh: Virsh,
    budget_s: float,
    group: str,
    slots: int,
    host: str = "",
    clock=time.monotonic,
) -> Ready:
    """Start a defined guest when a boot slot is free and wait until it is ready; the slot is held
    until then. A guest already running (started before) is only waited for."""
    with BOOT_SLOTS.hold(host or virsh.uri, slots, guest.name, group) as waited:
        state = virsh.run("domstate", guest.domain, timeout=30).strip()
        if state != "running":
            try:
                virsh.run("start", guest.domain, timeout=120)
            except VirshError as e:
                VERDICTS.fail(group, guest.name)
                raise NotReady(f"{guest.name} ({guest.domain}): libvirt could not start it: {e}") from None
        ready = wait_ready(guest, ssh, virsh, budget_s, group, clock)
    cpu = domain_cpu_seconds(virsh, guest.domain)
    ready = Ready(**{**ready.as_dict(), "cpu_seconds": round(cpu, 1) if cpu else 0.0, "waited_s": round(waited, 1)})
    runtime.log(
        f"{guest.name} ready after {ready.seconds:.0f} s ({ready.cpu_seconds:.0f} CPU-s"
        + (f", after {ready.waited_s:.0f} s waiting to boot" if ready.waited_s >= 1 else "")
        + f"), {ready.memory_available_mib} of {ready.memory_total_mib} MiB available"
        + (f" ({ready.resets} reset)" if ready.resets else "")
    )
    return ready


class ConsoleWatch:
    """New text of a domain's console log since the last look (the log restarts with the domain)."""

    def __init__(self, path: str):
        self.path = Path(path)
        self.offset = 0
        self.text = ""  # everything seen, for the final message and the report

    def read(self) -> str:
        try:
            with self.path.open("rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < self.offset:
                    self.offset = 0
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return ""
        self.offset += len(data)
        new = data.decode("utf-8", "replace")
        self.text = (self.text + new)[-200_000:]
        return new


def wait_ready(guest: BootingGuest, ssh: Ssh, virsh: Virsh, budget_s: float, group: str, clock=time.monotonic) -> Ready:
    """Wait until cloud-init is done on the guest; raise NotReady at the first certain failure."""
    try:
        return _wait_ready(guest, ssh, virsh, budget_s, group, clock)
    except runtime.Cancelled:
        raise runtime.Cancelled(f"{guest.name}: waiting for its boot") from None


def _wait_ready(guest: BootingGuest, ssh: Ssh, virsh: Virsh, budget_s: float, group: str, clock) -> Ready:
    start = clock()
    console = ConsoleWatch(guest.console_log)
    stall_s = stall_limit_s(budget_s)
    last_progress = start
    resets = 0
    final_seen = sshd_seen = False
    last_state_check = 0.0
    last_status = 0.0
    next_note = start

    def elapsed() -> float:
        return clock() - start

    def fail(what: str, report: str = "") -> NotReady:
        VERDICTS.fail(group, guest.name)
        lines = [f"{guest.name} ({guest.domain}, {guest.address}): {what} after {elapsed():.0f} s"]
        if report.strip():
            lines += ["  in the guest:"] + [f"    {line}" for line in tail(report, 30)]
        lines += [f"  last lines of the console ({guest.console_log}):"]
        lines += [f"    {line}" for line in tail(console.text, 6 if report.strip() else 12)] or ["    (empty)"]
        return NotReady("\n".join(lines))

    def guest_report() -> str:
        try:
            return ssh.run(guest.address, REPORT_COMMAND, timeout=SSH_PROBE_S, check=False).stdout
        except SshError as e:
            return f"(no SSH: {e})"

    def status() -> str | None:
        """cloud-init's status over SSH, or None when SSH does not answer."""
        try:
            done = ssh.run(guest.address, "cloud-init status --long", timeout=SSH_PROBE_S, check=False)
        except SshError:
            return None
        # An SSH session can end empty while sshd restarts during boot: that is "ask again".
        return done.stdout if done.returncode in (0, 1, 2) and done.stdout.strip() else None

    while True:
        runtime.check_cancelled(f"{guest.name}: waiting for the boot")
        other = VERDICTS.failed_first(group, guest.name)
        if other:
            raise NotReady(
                f"{guest.name}: stopped waiting after {elapsed():.0f} s: {other} failed first (see its error)"
            )

        new = console.read()
        if new:
            last_progress = clock()
            fatal = fatal_in_console(new)
            if fatal:
                raise fail(fatal, guest_report() if "out of memory" in fatal else "")
            seen = clean(console.text)
            final_seen = final_seen or guest.final_message in seen
            sshd_seen = sshd_seen or SSHD_STARTED in seen

        if clock() - last_state_check > 10:
            last_state_check = clock()
            try:
                state = virsh.run("domstate", guest.domain, timeout=30).strip()
            except VirshError as e:
                raise fail(f"libvirt does not report the domain ({e})") from None
            if state not in ("running", "paused", "in shutdown"):
                raise fail(f"the domain is {state!r}")

        # cloud-init's status over SSH: often once its final message is on the console, rarely before
        # and only once sshd runs (each SSH login costs an emulated guest seconds of CPU).
        since_status = clock() - last_status
        if (final_seen and since_status > 5) or (sshd_seen and since_status > 60):
            last_status = clock()
            text = status()
            state = cloud_init_state(text or "")
            if state == "done":
                return _facts(guest, ssh, elapsed(), resets)
            if state == "error":
                raise fail("cloud-init ended in error", guest_report())

        if clock() - last_progress > stall_s:
            text = status()  # a quiet console is fine while the guest answers and cloud-init runs
            if text is not None and cloud_init_state(text) == "running":
                last_progress = clock()
            elif text is not None and cloud_init_state(text) in ("done", "error"):
                final_seen = True  # the final message was missed (e.g. console lines interleaved)
            elif resets == 0:
                resets += 1
                runtime.log(
                    f"{guest.name}: no progress for {clock() - last_progress:.0f} s (console silent, no SSH "
                    f"answer) {elapsed():.0f} s into its boot: resetting it once",
                    severity="warning",
                )
                try:
                    virsh.run("reset", guest.domain, timeout=60)
                except VirshError as e:
                    raise fail(f"hung in boot, and the reset failed ({e})") from None
                last_progress = clock()
            else:
                raise fail(f"hung in boot again after a reset (console silent for {stall_s:.0f} s, no SSH answer)")

        if elapsed() > budget_s:
            raise fail(
                f"not ready within its boot budget of {budget_s:.0f} s "
                f"({'cloud-init still running' if final_seen else 'cloud-init never reported done'})",
                guest_report(),
            )
        if clock() >= next_note:
            next_note = clock() + 15
            stage = "cloud-init finishing" if final_seen else "sshd up" if sshd_seen else "booting"
            runtime.log(f"{guest.name}: {stage}, {elapsed():.0f} s (budget {budget_s:.0f} s)", ephemeral=True)
        runtime.sleep(POLL_S, f"{guest.name}: waiting for the boot")


def _facts(guest: BootingGuest, ssh: Ssh, seconds: float, resets: int) -> Ready:
    out = ssh.run(guest.address, FACTS_COMMAND, timeout=SSH_PROBE_S).stdout.split()
    ready = Ready(
        seconds=round(seconds, 1),
        boot_id=out[0],
        memory_total_mib=int(out[1]),
        memory_available_mib=int(out[2]),
        resets=resets,
        cpu_seconds=0.0,
        waited_s=0.0,
    )
    return ready


def oom_kills(console_log: str, since: int = 0) -> tuple[str | None, int]:
    """The first OOM kill (or panic) logged on a console after byte `since`, and the log's size now."""
    watch = ConsoleWatch(console_log)
    watch.offset = since
    new = watch.read()
    return fatal_in_console(new), watch.offset
