"""Readiness against a scripted guest: a console log file, fake SSH answers, a fake virsh, a fake clock.

Each case is a boot as it really goes wrong (the texts are what the guests print), and checks that
the wait ends at the first certain failure, with the VM's name and the lines that show it.
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest

import runtime
from runtime.console import fatal_in_console
from runtime.vm import VmRef
from virt import bootslots, readiness
from virt.bootslots import NotReady
from virt.readiness import boot_budget_s, cloud_init_state, wait_ready

FINAL = "l2dsr web01 (web) ready after"
OOM_LINE = "[  212.412345] Out of memory: Killed process 611 (nginx) total-vm:90000kB, anon-rss:86000kB"
STATUS_RUNNING = "status: running\ntime: Fri, 27 Nov 2026 03:50:00 +0000\ndetail:\nDataSourceNoCloud\n"
STATUS_DONE = "status: done\ntime: Fri, 27 Nov 2026 03:51:00 +0000\ndetail:\nDataSourceNoCloud\n"
STATUS_ERROR = (
    "status: error\ntime: Fri, 27 Nov 2026 03:51:00 +0000\ndetail:\n"
    "('scripts_user', RuntimeError('Runparts: 1 failures (runcmd) in 1 attempted commands'))\n"
)
REPORT_NGINX = (
    STATUS_ERROR + "--- failed units\nnginx.service loaded failed failed A high performance web server\n"
    '--- journal of nginx.service\nnginx: [emerg] unknown directive "broken" in /etc/nginx/nginx.conf:3\n'
    "--- commands (set -x) and errors in /var/log/cloud-init-output.log\n+ systemctl start nginx.service\n"
    "Job for nginx.service failed because the control process exited with error code.\n"
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Script:
    """The guest: console lines appear at given times; SSH answers by command."""

    def __init__(self, tmp_path: Path, clock: FakeClock):
        self.console = tmp_path / "console.log"
        self.console.write_text("")
        self.clock = clock
        self.timeline: list[tuple[float, str]] = []  # (seconds after start, console text)
        self.ssh_up_at: float | None = None
        self.status: list[tuple[float, str]] = []  # (from seconds, `cloud-init status` text)
        self.report = ""
        self.start = clock.now
        self.ssh_calls: list[str] = []
        self.virsh_calls: list[tuple[str, ...]] = []
        self.domain_state = "running"
        self.cpu_share = 1.0  # of a host core the guest gets

    def advance(self, seconds: float) -> None:
        self.clock.now += seconds
        t = self.clock.now - self.start
        due = [text for at, text in self.timeline if at <= t]
        self.timeline = [(at, text) for at, text in self.timeline if at > t]
        with self.console.open("a") as f:
            for text in due:
                f.write(text)

    # -- the Ssh and Virsh the wait talks to --
    def run(self, address: str, command: str, timeout: float = 120, check: bool = True):
        self.ssh_calls.append(command)
        t = self.clock.now - self.start
        if self.ssh_up_at is None or t < self.ssh_up_at:
            raise readiness.SshError(f"{address}: no answer")
        if command == readiness.REPORT_COMMAND:
            return subprocess.CompletedProcess([], 0, self.report, "")
        if command == readiness.FACTS_COMMAND:
            return subprocess.CompletedProcess([], 0, "0b1d-boot\n469 301\n", "")
        text = [s for at, s in self.status if at <= t][-1]
        return subprocess.CompletedProcess([], 0 if "done" in text else 1, text, "")

    def virsh_run(self, *args: str, check: bool = True, timeout: float = 300) -> str:
        self.virsh_calls.append(args)
        if args[0] == "start":
            self.domain_state = "running"
        if args[0] == "domstats":  # the guest's CPU so far: a share of a core since the script's start
            return f"Domain: '{args[-1]}'\n  cpu.time={int((self.clock.now - self.start) * self.cpu_share * 1e9)}\n"
        return f"{self.domain_state}\n" if args[0] == "domstate" else ""


class FakeVirsh:
    def __init__(self, script: Script):
        self.run = script.virsh_run
        self.uri = "test:///fake"


@pytest.fixture
def guest_script(tmp_path, monkeypatch):
    clock = FakeClock()
    script = Script(tmp_path, clock)
    monkeypatch.setattr(runtime, "sleep", lambda seconds, what: script.advance(seconds))
    logged: list[tuple[str, str]] = []
    monkeypatch.setattr(runtime, "_sink", lambda sev, msg, eph, urn: logged.append((sev, msg)))
    script.logged = logged
    return script


def wait(script: Script, budget: float = 300, group: str = "t"):
    guest = VmRef("web01", "web", "172.16.0.101", "l2dsr-t-web01", str(script.console))
    return wait_ready(guest, FINAL, script, FakeVirsh(script), budget, group, clock=script.clock)


def boot_log(final_at: float) -> list[tuple[float, str]]:
    return [
        (1, "\x1b[0;32m  OK  \x1b[0m] Reached target Basic System.\r\n"),
        (20, "Cloud-init v. 22.4.2 running 'init' at ...\r\n"),
        (final_at, f"{FINAL} 95.31 s\r\n"),
    ]


def test_a_clean_boot_is_ready_with_its_facts(guest_script):
    guest_script.timeline = boot_log(90)
    guest_script.ssh_up_at = 60
    guest_script.status = [(0, STATUS_RUNNING), (92, STATUS_DONE)]
    guest_script.domain_state = "shut off"  # defined by its Domain resource, started by its readiness
    guest = VmRef("web01", "web", "172.16.0.101", "l2dsr-t-web01", str(guest_script.console))
    ready = readiness.boot(
        guest, FINAL, guest_script, FakeVirsh(guest_script), 300, "t", slots=2, clock=guest_script.clock
    )
    assert ("start", "l2dsr-t-web01") in guest_script.virsh_calls
    assert ready.boot_id == "0b1d-boot" and ready.memory_available_mib == 301 and ready.resets == 0
    assert 92 <= ready.seconds <= 100 and ready.cpu_seconds == ready.seconds  # a whole core, in the script
    assert any("web01 ready after 9" in m and f"({ready.cpu_seconds:.0f} CPU-s)" in m for _, m in guest_script.logged)
    assert bootslots.BOOT_SLOTS.booting("test:///fake") == 0  # the slot is given back


def test_an_oom_kill_on_the_console_fails_at_once_with_the_vm_and_the_line(guest_script):
    guest_script.timeline = [(1, "booting\n"), (40, OOM_LINE + "\n")]
    guest_script.ssh_up_at = 10**6  # the guest is too busy to answer
    with pytest.raises(NotReady) as err:
        wait(guest_script)
    message = str(err.value)
    assert message.startswith("web01 (l2dsr-t-web01, 172.16.0.101): out of memory")
    assert "Killed process 611 (nginx)" in message and "after 40 s" in message  # when the line appeared
    assert "last lines of the console" in message


def test_cloud_init_in_error_fails_with_what_the_guest_says(guest_script):
    guest_script.timeline = boot_log(70)
    guest_script.ssh_up_at = 60
    guest_script.status = [(0, STATUS_RUNNING), (72, STATUS_ERROR)]
    guest_script.report = REPORT_NGINX
    with pytest.raises(NotReady) as err:
        wait(guest_script)
    message = str(err.value)
    assert "cloud-init ended in error after 7" in message  # seconds after the final message, not a timeout
    assert 'unknown directive "broken"' in message and "nginx.service loaded failed" in message
    assert len(message.splitlines()) < 50  # one screen


def test_a_hung_boot_is_reset_once_then_declared_failed(guest_script):
    guest_script.timeline = [(1, "Cloud-init v. 22.4.2 running 'modules:config'\n")]  # then silence
    with pytest.raises(NotReady) as err:
        wait(guest_script, budget=3000)
    resets = [c for c in guest_script.virsh_calls if c[0] == "reset"]
    assert resets == [("reset", "l2dsr-t-web01")]
    assert any(sev == "warning" and "resetting it once" in m for sev, m in guest_script.logged)
    assert "hung in boot again after a reset" in str(err.value)


def test_a_quiet_console_is_fine_while_cloud_init_answers(guest_script):
    guest_script.timeline = [(1, "booting\n"), (400, f"{FINAL} 400 s\n")]
    guest_script.ssh_up_at = 60
    guest_script.status = [(0, STATUS_RUNNING), (401, STATUS_DONE)]
    ready = wait(guest_script, budget=3000)
    assert ready.resets == 0 and not [c for c in guest_script.virsh_calls if c[0] == "reset"]


def test_no_ssh_within_the_budget_names_the_budget(guest_script):
    guest_script.timeline = [(t, f"line {t}\n") for t in range(1, 400, 30)]  # alive, never done
    with pytest.raises(NotReady) as err:
        wait(guest_script, budget=200)
    assert "not ready within its boot budget of 200 s" in str(err.value)


def test_a_boot_starved_by_a_busy_host_is_waited_for_while_it_makes_progress(guest_script):
    """Past its wall-clock budget with a third of a core: it has used less CPU than the budget's
    boots cost and its console moves, so the wait goes on (saying so) until it is ready."""
    guest_script.cpu_share = 0.2
    guest_script.timeline = [(t, f"line {t}\n") for t in range(1, 500, 30)] + [(500, f"{FINAL} 500 s\n")]
    guest_script.ssh_up_at = 300
    guest_script.status = [(0, STATUS_RUNNING), (501, STATUS_DONE)]
    ready = wait(guest_script, budget=200)
    assert ready.seconds > 200
    assert any(sev == "warning" and "the host's CPUs are busy elsewhere" in m for sev, m in guest_script.logged)


def test_a_starved_boot_still_fails_once_it_has_used_its_cpu_or_stops_moving(guest_script):
    guest_script.cpu_share = 0.2
    guest_script.timeline = [(t, f"line {t}\n") for t in range(1, 2000, 30)]  # alive, never done
    with pytest.raises(NotReady) as err:
        wait(guest_script, budget=200)
    assert "not ready within its boot budget of 200 s" in str(err.value)
    assert 400 < float(str(err.value).split(" after ")[1].split(" s")[0]) <= 3 * 200 + 10  # the busy host's limit


def test_when_one_vm_fails_the_others_stop_waiting(guest_script):
    bootslots.VERDICTS.fail("stack-x", "lb")
    guest_script.timeline = boot_log(90)
    with pytest.raises(NotReady) as err:
        wait(guest_script, group="stack-x")
    assert "lb failed first" in str(err.value) and "after 0 s" in str(err.value)


def test_cancel_stops_the_wait_naming_the_vm(guest_script):
    runtime.cancelled.set()
    try:
        with pytest.raises(runtime.Cancelled, match="web01: waiting for its boot: stopped"):
            wait(guest_script)
    finally:
        runtime.cancelled.clear()


def test_budget_grows_with_guests_per_core():
    assert boot_budget_s("qemu", 1, 2) == 420  # 4 x 90 s + 60 s
    assert boot_budget_s("qemu", 4, 2) == 780  # four 1-vCPU guests on 2 cores: measured 200-290 s
    assert boot_budget_s("kvm", 4, 8) < boot_budget_s("qemu", 4, 8)


def test_console_and_status_parsing():
    assert fatal_in_console("x\r\n\x1b[0m" + OOM_LINE).startswith("out of memory")
    assert fatal_in_console("[ 3.1] Kernel panic - not syncing: VFS: Unable to mount root fs").startswith(
        "kernel panic"
    )
    assert fatal_in_console("[ 9.0] watchdog: BUG: soft lockup - CPU#0 stuck for 23s!") is None  # TCG noise, not fatal
    assert [cloud_init_state(t) for t in (STATUS_DONE, STATUS_ERROR, STATUS_RUNNING, "")] == [
        "done",
        "error",
        "running",
        "unknown",
    ]


def test_boots_take_turns_in_the_slots_and_a_waiting_boot_stops_on_a_failure(monkeypatch):
    slots = bootslots.BootSlots()
    order: list[str] = []
    first_in = threading.Event()
    release = threading.Event()
    second_waits = threading.Event()  # web02 said it waits for a slot (its first note, at once)

    def sink(severity, message, ephemeral, urn):
        if message.startswith("web02: waiting to boot"):
            second_waits.set()

    monkeypatch.setattr(runtime, "_sink", sink)

    def first():
        with slots.hold("h", 1, "web01", "turns"):
            order.append("web01 in")
            first_in.set()
            release.wait(10)
        order.append("web01 out")

    def second():
        with slots.hold("h", 1, "web02", "turns") as waited:
            order.append(f"web02 in after {waited:.0f} s")

    a = threading.Thread(target=first)
    a.start()
    first_in.wait(10)
    b = threading.Thread(target=second)
    b.start()
    assert second_waits.wait(10)
    assert slots.booting("h") == 1 and order == ["web01 in"]  # web02 waits for the slot
    release.set()
    a.join(10)
    b.join(10)
    assert order[:2] == ["web01 in", "web01 out"] and order[2].startswith("web02 in after")

    with slots.hold("h", 1, "web01", "failing"):
        bootslots.VERDICTS.fail("failing", "web01")
        with (
            pytest.raises(NotReady, match="web02: not started: web01 failed first"),
            slots.hold("h", 1, "web02", "failing"),
        ):
            pass
