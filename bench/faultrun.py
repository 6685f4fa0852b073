"""The fault run (`l2dsr:benchFault`): load for a fixed time while one web fails and comes back.

One run after the benchmark's steps, at the first concurrency value, `seconds` long. At `at_s` the
web fails: `stop-web` stops its nginx (its kernel then refuses connections), `kill-web` pauses its
VM (`virsh suspend`: no RST, no ARP reply, as a crashed host). At `restore_s` it comes back
(`systemctl start nginx`, `virsh resume`); whatever happens, the web is restored before the run
ends. Samplers on the VMs record every second (bench/timeline.py): what the webs served, what the
clients saw fail, and whether the LB had the web in rotation, from which the times to eject and to
readmit follow. The same fault under proxy (HAProxy's `check`), dsr with keepalived and dsr without
(the seed's static rules) answers what each costs when a server dies.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import runtime
from bench import timeline
from bench.matrix import split
from bench.spec import FaultPlan
from loadtools import Load
from runtime.hostfacts import atomic_write
from runtime.ssh import Ssh, SshError
from runtime.vm import VmRef
from virt.virsh import Virsh, VirshError

LB_PERIOD_S = 0.5  # the LB's rotation: eject and readmit are read from it
VM_PERIOD_S = 1.0
REQUESTS_PER_SECOND_CEILING = 20000  # per client: what ab allocates its per-request records for


def loads(url: str, plan: FaultPlan, clients: int, keepalive: bool) -> list[Load]:
    ceiling = plan.seconds * REQUESTS_PER_SECOND_CEILING
    return [Load(url, c, ceiling, keepalive, plan.seconds) for c in split(plan.concurrency, clients)]


# On the web, over one SSH session opened before the load (a new login under full load can take
# seconds of an emulated CPU): each line read is done at once, and answered with its exit status.
WEB_SESSION = (
    "echo ready; while read what; do case $what in "
    "stop) sudo systemctl stop nginx;; start) sudo systemctl start nginx;; *) exit;; esac; "
    'echo "$?"; done'
)


class Injector:
    """The fault and its undoing on one web; `restore` is safe to call twice and after a failed fault.

    Their moments are the host's, not the web's (a guest's clock under full load lags by seconds):
    the fault when it was sent (nginx refuses connections as its stop begins; a graceful stop then
    lets requests under way finish, seconds under load), the restore when it was done (the web
    answers again once its start returned, or its VM resumed)."""

    def __init__(self, ssh: Ssh, plan: FaultPlan, web: VmRef):
        self.ssh, self.plan, self.web = ssh, plan, web
        self.down = False
        self.failed_at = 0.0
        self.session: subprocess.Popen[str] | None = None

    def open(self) -> None:
        """For stop-web, the session to the web, before the load starts."""
        if self.plan.fault.action != "stop-web":
            return
        self.session = subprocess.Popen(
            self.ssh.argv(self.web.address, WEB_SESSION),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.session.stdout is not None and self.session.stderr is not None
        if self.session.stdout.readline().strip() != "ready":
            self.session.kill()
            said = self.session.stderr.read()[-300:].strip()
            self.session = None
            raise FaultFailed(f"{self.web.name}: no SSH session for the fault ({said or 'it printed nothing'})")

    def _on_web(self, what: str) -> None:
        session = self.session
        if session is None or session.stdin is None or session.stdout is None:
            raise FaultFailed(f"{self.web.name}: the fault's SSH session is not open")
        session.stdin.write(what + "\n")
        session.stdin.flush()
        answer = session.stdout.readline().strip()
        if answer != "0":
            raise FaultFailed(f"{self.web.name}: `systemctl {what} nginx` failed (exit {answer or 'none'})")

    def fail(self) -> float:
        self.down = True
        sent = time.time()
        if self.plan.fault.action == "stop-web":
            self._on_web("stop")
        else:
            Virsh(self.plan.uri).run("suspend", self.web.domain, timeout=60)
        self.failed_at = time.time()  # done: a loaded web acts on its stop seconds late
        return sent

    def restore(self) -> float:
        if not self.down:
            return time.time()
        if self.plan.fault.action == "stop-web":
            if self.session is not None and self.session.poll() is None:
                self._on_web("start")
            else:  # the session is gone: a new one
                self.ssh.run(self.web.address, "sudo systemctl start nginx", timeout=120, cancellable=False)
        else:
            Virsh(self.plan.uri).run("resume", self.web.domain, timeout=60)
        self.down = False
        return time.time()

    def close(self) -> None:
        if self.session is not None:
            self.session.kill()
            self.session.communicate()
            self.session = None


def schedule(
    injector: Injector, plan: FaultPlan, t0: float, times: dict[str, float], failed: list, stop: threading.Event
) -> None:
    """In a thread beside the load: the fault at t0 + at_s, the restore at t0 + restore_s (host clock);
    `times` gets when each had taken effect, in seconds of the run. `stop`: the load ended early."""
    try:
        for when, action, name in (
            (plan.fault.at_s, injector.fail, "fault"),
            (plan.fault.restore_s, injector.restore, "restore"),
        ):
            while time.time() < t0 + when:
                if stop.is_set() or runtime.cancelled.is_set():
                    return
                time.sleep(0.05)
            times[name] = round(action() - t0, 2)
            if name == "fault":
                times["fault_done"] = round(injector.failed_at - t0, 2)
    except BaseException as e:  # the load goes on; the run reports it after the clients are done
        failed.append(e)


def start_samplers(ssh: Ssh, plan: FaultPlan, lb: VmRef, clients: list[VmRef], webs: list[VmRef], lasting: int) -> None:
    jobs = [(lb, timeline.sampler(plan.rotation, LB_PERIOD_S, lasting))]
    jobs += [(c, timeline.sampler(timeline.CLIENT, VM_PERIOD_S, lasting)) for c in clients]
    jobs += [(w, timeline.sampler(timeline.WEB, VM_PERIOD_S, lasting)) for w in webs]
    runtime.at_once(lambda job: ssh.run(job[0].address, job[1], timeout=60), jobs)


def collect(ssh: Ssh, vms: list[VmRef]) -> dict[str, str]:
    """Each VM's samples; the samplers stopped (they would stop by themselves)."""
    command = f"sudo pkill -f 'l2dsr-sample[r].sh'; cat {timeline.SAMPLES}"  # [r]: not this command's own shell
    outs = runtime.at_once(lambda v: ssh.run(v.address, command, timeout=60, check=False).stdout, vms)
    return dict(zip([v.name for v in vms], outs, strict=True))


def record(
    plan: FaultPlan,
    texts: dict[str, str],
    clocks_of: dict[str, timeline.Clock],
    t0: float,
    times: dict[str, float],
    lb: str,
    clients: list[str],
    webs: list[str],
) -> dict:
    """The fault run's timeline and times from the samplers' outputs (pure)."""
    s = plan.seconds
    on = {
        name: timeline.samples(texts.get(name, ""), clocks_of.get(name, timeline.SAME), t0)
        for name in [lb, *clients, *webs]
    }
    fault_t, restore_t = times.get("fault", float(plan.fault.at_s)), times.get("restore", float(plan.fault.restore_s))
    ft = timeline.fault_times(on[lb], plan.keys, plan.fault.web, fault_t, restore_t)

    def series(name: str, counter: str) -> list[tuple[float, int]]:
        return [(x.t, c[counter]) for x in on[name] if counter in (c := timeline.counters(x))]

    def summed(names: list[str], counter: str, **kw) -> list[int]:
        per = [timeline.per_second(series(n, counter), s, **kw) for n in names]
        return [sum(col) for col in zip(*per, strict=True)] if per else [0] * s

    sent = [(x.t, timeline.rotation(x, plan.keys).get(plan.fault.web, (False, -1))[1]) for x in on[lb]]
    errors = [a + b for a, b in zip(summed(clients, "attempt_fails"), summed(clients, "resets"), strict=True)]
    return {
        "fault": str(plan.fault),
        "action": plan.fault.action,
        "web": plan.fault.web,
        "health_check": plan.checker,
        "seconds": s,
        "fault_at_s": fault_t,
        # when the stop (or the pause) had returned: the web failed between fault_at_s and this
        "fault_done_at_s": times.get("fault_done", fault_t),
        "restored_at_s": restore_t,
        # A time that never came is None in fault.json; Pulumi drops null values from outputs, so
        # the stack output says it with these two as well.
        "ejected": ft.eject_s is not None,
        "eject_s": ft.eject_s,
        "readmitted": ft.readmit_s is not None,
        "readmit_s": ft.readmit_s,
        "sent_while_down": ft.sent_while_down,
        # How finely the clients' errors are placed in time: each second's count is interpolated
        # between readings this far apart at most.
        "client_reading_gap_s": max((timeline.reading_gap(on[c], s) for c in clients), default=0.0),
        # and the LB's rotation, read each LB_PERIOD_S: the ejection and readmission are known this finely
        "lb_reading_gap_s": timeline.reading_gap(on[lb], s),
        "timeline": {
            "served": summed(webs, "served", restarts=True, own=1),
            "served_by_web": timeline.per_second(series(plan.fault.web, "served"), s, restarts=True, own=1),
            "in_rotation": timeline.in_rotation(on[lb], plan.keys, plan.fault.web, s),
            "sent_to_web": timeline.per_second([(t, v) for t, v in sent if v >= 0], s),
            "connection_errors": errors,
            "syn_retransmits": summed(clients, "synretrans"),
        },
    }


def flags(rec: dict, failed: int) -> list[str]:
    """What the fault run's row must say beside its numbers."""
    out = []
    if rec.get("eject_s") is None:
        out.append(
            f"{rec['web']} never taken out ({rec['health_check']}): the LB sent it {rec['sent_while_down']} "
            "connection(s) while it was down"
        )
    if rec.get("eject_s") is not None and rec.get("readmit_s") is None:
        out.append(f"{rec['web']} not back in rotation by the end of the run")
    if failed:
        out.append(f"{failed} request(s) failed")
    return out


class FaultFailed(runtime.LabFailure):
    pass


def run_during(
    load: Callable[[float], list[str]], plan: FaultPlan, injector: Injector, lead_s: float
) -> tuple[list[str], float, dict[str, float]]:
    """The load (`load(t0)`, every client starting at host time t0) with the fault scheduled beside it.
    The web is restored whatever happens; a fault or a restore that failed is the run's error, after
    the load (texts, t0, when the fault and the restore took effect)."""
    injector.open()
    t0 = time.time() + lead_s
    times: dict[str, float] = {}
    failed: list[BaseException] = []
    stop = threading.Event()
    thread = threading.Thread(target=schedule, args=(injector, plan, t0, times, failed, stop), daemon=True)
    thread.start()
    try:
        texts = load(t0)
    finally:
        stop.set()
        thread.join(timeout=120)  # a fault or restore under way ends within its own timeout
        try:
            injector.restore()
        except (SshError, VirshError, runtime.LabFailure) as e:
            failed.append(e)
        injector.close()
    if failed:
        how = "pause its VM" if plan.fault.action == "kill-web" else "stop its nginx"
        undo = (
            f"virsh -c {plan.uri} resume {injector.web.domain}"
            if plan.fault.action == "kill-web"
            else "systemctl start nginx"
        )
        state = f"; it may still be down: `{undo}` brings it back" if injector.down else ""
        raise FaultFailed(
            f"the fault run on {plan.fault.web} ({plan.fault}): could not {how} or bring it back: {failed[0]}{state}"
        )
    return texts, t0, times


def write(out: Path, rec: dict, samples: dict[str, str]) -> None:
    """The record, and each VM's samples as they came (the raw data the timeline was made from)."""
    atomic_write(out / "fault.json", json.dumps(rec, indent=1), mode=0o644)
    for name, text in samples.items():
        (out / f"fault.{name}.samples.txt").write_text(text)
