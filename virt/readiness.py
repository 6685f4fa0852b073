"""Is a VM ready? Watched from the host: its console, its domain state, then SSH and cloud-init.

The first certain failure ends the wait at once with one readable message: the VM, what failed, and
the lines that show it (cloud-init's status, failed units, the journal's errors, the end of
cloud-init's output, the end of the console). Certain failures: a kernel panic or an out-of-memory
kill on the console, a domain that stopped, cloud-init ending in error, not ready within the boot
budget. A boot that stops making progress (console silent, SSH silent) is reset once, logged,
before it is declared failed.

The budget is wall-clock time for a guest that gets its CPU; one that is past it but has had less
CPU than the budget's boots cost (a host whose cores are busy with other work starves it) and still
makes progress is waited for, saying so, up to BUSY_HOST_FACTOR budgets: what fails a boot is
using up its CPU or making no progress, not a slow host.

The waits of one stack share a verdict, and boots take turns (virt/bootslots.py); the console is
read by runtime/console.py.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace

import runtime
from runtime.console import ConsoleWatch, clean, fatal_in_console, tail
from runtime.ssh import Ssh, SshError
from runtime.vm import VmRef
from virt.bootslots import BOOT_SLOTS, VERDICTS, NotReady
from virt.virsh import Virsh, VirshError

# Measured here (2 cores, software emulation): one guest alone takes 80-96 s from start to
# cloud-init done, nearly all of it on its one vCPU; four 1-vCPU guests at once 194-212 s on 2 cores.
# So a boot costs about 90 CPU-seconds under TCG, and guests booting together share the host's cores.
TCG_BOOT_CPU_S = 90.0
KVM_BOOT_CPU_S = 30.0  # not measured here (no KVM): a generous third of the emulated cost
BUDGET_MARGIN = 4.0  # the budget is this many expected boots, plus a fixed allowance (a busy host)
BUDGET_FIXED_S = 60.0
BUSY_HOST_FACTOR = 3.0
POLL_S = 2.0
SSH_PROBE_S = 45.0

SSHD_STARTED = "Started ssh.service"  # systemd's status line on the console

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


@dataclass(frozen=True)
class Ready:
    seconds: float
    boot_id: str
    memory_total_mib: int
    memory_available_mib: int
    resets: int
    cpu_seconds: float  # the domain's CPU time from start to ready (libvirt's cpu.time): a boot's cost
    waited_s: float  # time spent waiting for a boot slot before the start


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


def cloud_init_state(status_text: str) -> str:
    """running | done | error | unknown, from `cloud-init status --long` (degraded done counts as done)."""
    m = re.search(r"^status: (\w+)", status_text, re.M)
    if not m:
        return "unknown"
    return {"done": "done", "error": "error", "running": "running", "not": "running"}.get(m.group(1), "unknown")


def domain_cpu_seconds(virsh: Virsh, domain: str) -> float | None:
    """The domain's CPU time so far (`virsh domstats --cpu-total`: cpu.time, ns), None if not given."""
    try:
        out = virsh.run("domstats", "--cpu-total", domain, timeout=30)
    except VirshError:
        return None
    m = re.search(r"cpu\.time=(\d+)", out)
    return int(m.group(1)) / 1e9 if m else None


def boot(
    guest: VmRef,
    final_message: str,
    ssh: Ssh,
    virsh: Virsh,
    budget_s: float,
    group: str,
    slots: int,
    clock=time.monotonic,
) -> Ready:
    """Start a defined guest when a boot slot is free and wait until it is ready; the slot is held
    until then. A guest already running (started before) is only waited for."""
    with BOOT_SLOTS.hold(virsh.uri, slots, guest.name, group) as waited:  # the slots are its libvirt host's
        state = virsh.run("domstate", guest.domain, timeout=30).strip()
        if state != "running":
            try:
                virsh.run("start", guest.domain, timeout=120)
            except VirshError as e:
                VERDICTS.fail(group, guest.name)
                raise NotReady(f"{guest.name} ({guest.domain}): libvirt could not start it: {e}") from None
        ready = wait_ready(guest, final_message, ssh, virsh, budget_s, group, clock)
    cpu = domain_cpu_seconds(virsh, guest.domain)
    ready = replace(ready, cpu_seconds=round(cpu, 1) if cpu else 0.0, waited_s=round(waited, 1))
    runtime.log(
        f"{guest.name} ready after {ready.seconds:.0f} s ({ready.cpu_seconds:.0f} CPU-s"
        + (f", after {ready.waited_s:.0f} s waiting to boot" if ready.waited_s >= 1 else "")
        + f"), {ready.memory_available_mib} of {ready.memory_total_mib} MiB available"
        + (f" ({ready.resets} reset)" if ready.resets else "")
    )
    return ready


def wait_ready(
    guest: VmRef, final_message: str, ssh: Ssh, virsh: Virsh, budget_s: float, group: str, clock=time.monotonic
) -> Ready:
    """Wait until cloud-init is done on the guest; raise NotReady at the first certain failure."""
    try:
        return _wait_ready(guest, final_message, ssh, virsh, budget_s, group, clock)
    except runtime.Cancelled:
        raise runtime.Cancelled(f"{guest.name}: waiting for its boot") from None


def _wait_ready(guest: VmRef, final_message: str, ssh: Ssh, virsh: Virsh, budget_s: float, group: str, clock) -> Ready:
    watch = BootWatch(guest, final_message, ssh, virsh, budget_s, group, clock)
    while True:
        runtime.check_cancelled(f"{guest.name}: waiting for the boot")
        watch.check_verdict()
        watch.check_console()
        watch.check_domain()
        ready = watch.check_cloud_init()
        if ready is not None:
            return ready
        watch.check_progress()
        watch.check_budget()
        watch.note()
        runtime.sleep(POLL_S, f"{guest.name}: waiting for the boot")


class BootWatch:
    """One guest's boot as seen from the host; each check raises NotReady at a certain failure.

    What it watches, in the order of one poll: the group's verdict (another VM failed first), the
    console (fatal kernel messages; the final message; sshd started), the domain's state, cloud-init
    over SSH (rarely before the final message: each login costs an emulated guest seconds of CPU),
    progress (a silent console and no SSH answer: reset once, then fail), and the budget.
    """

    def __init__(
        self, guest: VmRef, final_message: str, ssh: Ssh, virsh: Virsh, budget_s: float, group: str, clock
    ) -> None:
        self.guest, self.final_message, self.ssh, self.virsh = guest, final_message, ssh, virsh
        self.budget_s, self.group, self.clock = budget_s, group, clock
        self.start = self.last_progress = self.next_note = clock()
        self.console = ConsoleWatch(guest.console_log, guest.host)
        self.stall_s = stall_limit_s(budget_s)
        self.resets = 0
        self.final_seen = self.sshd_seen = False
        self.last_state_check = self.last_status = self.last_cpu_check = 0.0
        # the CPU the budget's boots cost (its expected boots, without the fixed allowance)
        self.cpu_allowance_s = max(budget_s - BUDGET_FIXED_S, budget_s / 2)
        self.cpu_at_start = domain_cpu_seconds(virsh, guest.domain)
        self.starved_said = False

    def elapsed(self) -> float:
        return self.clock() - self.start

    def fail(self, what: str, report: str = "") -> NotReady:
        g = self.guest
        VERDICTS.fail(self.group, g.name)
        lines = [f"{g.name} ({g.domain}, {g.address}): {what} after {self.elapsed():.0f} s"]
        if report.strip():
            lines += ["  in the guest:"] + [f"    {line}" for line in tail(report, 30)]
        lines += [f"  last lines of the console ({g.console_log}):"]
        lines += [f"    {line}" for line in tail(self.console.text, 6 if report.strip() else 12)] or ["    (empty)"]
        return NotReady("\n".join(lines))

    def guest_report(self) -> str:
        try:
            return self.ssh.run(self.guest.address, REPORT_COMMAND, timeout=SSH_PROBE_S, check=False).stdout
        except SshError as e:
            return f"(no SSH: {e})"

    def status(self) -> str | None:
        """cloud-init's status over SSH, or None when SSH does not answer."""
        try:
            done = self.ssh.run(self.guest.address, "cloud-init status --long", timeout=SSH_PROBE_S, check=False)
        except SshError:
            return None
        # An SSH session can end empty while sshd restarts during boot: that is "ask again".
        return done.stdout if done.returncode in (0, 1, 2) and done.stdout.strip() else None

    def check_verdict(self) -> None:
        other = VERDICTS.failed_first(self.group, self.guest.name)
        if other:
            raise NotReady(
                f"{self.guest.name}: stopped waiting after {self.elapsed():.0f} s: {other} failed first (see its error)"
            )

    def check_console(self) -> None:
        new = self.console.read()
        if not new:
            return
        self.last_progress = self.clock()
        fatal = fatal_in_console(new)
        if fatal:
            raise self.fail(fatal, self.guest_report() if "out of memory" in fatal else "")
        seen = clean(self.console.text)
        self.final_seen = self.final_seen or self.final_message in seen
        self.sshd_seen = self.sshd_seen or SSHD_STARTED in seen

    def check_domain(self) -> None:
        if self.clock() - self.last_state_check <= 10:
            return
        self.last_state_check = self.clock()
        try:
            state = self.virsh.run("domstate", self.guest.domain, timeout=30).strip()
        except VirshError as e:
            raise self.fail(f"libvirt does not report the domain ({e})") from None
        if state not in ("running", "paused", "in shutdown"):
            raise self.fail(f"the domain is {state!r}")

    def check_cloud_init(self) -> Ready | None:
        """Often once the final message is on the console, rarely before and only once sshd runs."""
        since_status = self.clock() - self.last_status
        if not ((self.final_seen and since_status > 5) or (self.sshd_seen and since_status > 60)):
            return None
        self.last_status = self.clock()
        state = cloud_init_state(self.status() or "")
        if state == "done":
            return _facts(self.guest, self.ssh, self.elapsed(), self.resets)
        if state == "error":
            raise self.fail("cloud-init ended in error", self.guest_report())
        return None

    def check_progress(self) -> None:
        if self.clock() - self.last_progress <= self.stall_s:
            return
        text = self.status()  # a quiet console is fine while the guest answers and cloud-init runs
        if text is not None and cloud_init_state(text) == "running":
            self.last_progress = self.clock()
        elif text is not None and cloud_init_state(text) in ("done", "error"):
            self.final_seen = True  # the final message was missed (e.g. console lines interleaved)
        elif self.resets == 0:
            self.resets += 1
            runtime.log(
                f"{self.guest.name}: no progress for {self.clock() - self.last_progress:.0f} s (console silent, "
                f"no SSH answer) {self.elapsed():.0f} s into its boot: resetting it once",
                severity="warning",
            )
            try:
                self.virsh.run("reset", self.guest.domain, timeout=60)
            except VirshError as e:
                raise self.fail(f"hung in boot, and the reset failed ({e})") from None
            self.last_progress = self.clock()
        else:
            raise self.fail(
                f"hung in boot again after a reset (console silent for {self.stall_s:.0f} s, no SSH answer)"
            )

    def cpu_used_s(self) -> float | None:
        now = domain_cpu_seconds(self.virsh, self.guest.domain)
        return None if now is None or self.cpu_at_start is None else now - self.cpu_at_start

    def check_budget(self) -> None:
        if self.elapsed() <= self.budget_s or self.clock() - self.last_cpu_check < 10:
            return
        self.last_cpu_check = self.clock()
        used = self.cpu_used_s()
        progressing = self.clock() - self.last_progress <= self.stall_s
        if (
            used is not None
            and used < self.cpu_allowance_s
            and progressing
            and self.elapsed() <= BUSY_HOST_FACTOR * self.budget_s
        ):
            if not self.starved_said:
                self.starved_said = True
                runtime.log(
                    f"{self.guest.name}: {self.elapsed():.0f} s into its boot, past its budget of "
                    f"{self.budget_s:.0f} s, but it has had only {used:.0f} of the {self.cpu_allowance_s:.0f} "
                    "CPU-s its budget allows (the host's CPUs are busy elsewhere): waiting on while it makes progress",
                    severity="warning",
                )
            return
        done = "cloud-init still running" if self.final_seen else "cloud-init never reported done"
        cpu = f", {used:.0f} CPU-s used" if used is not None else ""
        raise self.fail(f"not ready within its boot budget of {self.budget_s:.0f} s ({done}{cpu})", self.guest_report())

    def note(self) -> None:
        if self.clock() < self.next_note:
            return
        self.next_note = self.clock() + 15
        stage = "cloud-init finishing" if self.final_seen else "sshd up" if self.sshd_seen else "booting"
        runtime.log(
            f"{self.guest.name}: {stage}, {self.elapsed():.0f} s (budget {self.budget_s:.0f} s)", ephemeral=True
        )


def _facts(guest: VmRef, ssh: Ssh, seconds: float, resets: int) -> Ready:
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
