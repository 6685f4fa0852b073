"""The fault run: its schedule read from config, the samplers' lines, the times to eject and readmit,
and the failures it must report (a fault it could not undo). No VM: samplers' outputs are built as
the guests print them; the rotation commands run on real ipvsadm/HAProxy output shapes through the
real awk."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

import lbmodes
from bench import faultrun, timeline
from bench.faultrun import FaultFailed, Injector
from bench.spec import FaultPlan, fault_plan
from lab.addressing import plan
from lab.fault import read_fault
from lab.spec import Fault
from loadtools import clock_start
from loadtools.ab import parse as parse_ab
from resolution import Configured
from runtime.vm import VmRef
from tests.conftest import lab_of

DATA = Path(__file__).parent / "data"
WEBS = ["web01", "web02"]
KEYS = {"172.16.0.101": "web01", "172.16.0.102": "web02", "web01": "web01", "web02": "web02"}


# ---- the schedule -----------------------------------------------------------------------------------


def test_fault_defaults_its_restore_ten_seconds_later():
    fault, problems = read_fault("kill-web:web01@4s", WEBS, 30)
    assert problems == [] and (fault.action, fault.web, fault.at_s, fault.restore_s) == ("kill-web", "web01", 4, 14)
    assert str(fault) == "kill-web:web01@4s-14s"


@pytest.mark.parametrize(
    "text, says",
    [
        ("stop-web:web02@8s-8s", "is not after the fault"),
        ("stop-web:web02@20s", "the restore at 30 s is not inside the fault run (30 s)"),
        ("reboot-web:web02@5s", "'reboot-web' is not one of stop-web, kill-web"),
        ("stop-web:web2@5s", "'web2' is not a web of this lab"),
        ("stop-web web02 5", "is not ACTION:WEB@Ns"),
    ],
)
def test_fault_refusals_name_the_fix(text, says):
    fault, problems = read_fault(text, WEBS, 30)
    assert fault is None and any(says in p.text for p in problems), problems
    assert all(p.key == "benchFault" for p in problems)


def test_no_fault_is_no_fault_run():
    assert read_fault("  ", WEBS, 30) == (None, [])
    spec, mode = lab_of({"mode": "dsr"})
    assert fault_plan(Configured(spec, mode, plan(spec))) is None


@pytest.mark.parametrize(
    "mode, check, checker",
    [("proxy", "none", "HAProxy check"), ("dsr", "keepalived", "keepalived"), ("dsr", "none", "none (static rules)")],
)
def test_the_plan_says_what_takes_a_dead_web_out(mode, check, checker):
    spec, m = lab_of({"mode": mode, "ipvsHealthCheck": check, "benchFault": "stop-web:web02@5s"})
    fp = fault_plan(Configured(spec, m, plan(spec)), {"web02": "qemu+ssh://root@10.254.0.2/system"})
    assert fp.checker == checker and fp.keys["172.16.0.102"] == "web02" and fp.uri.startswith("qemu+ssh")
    assert (fp.seconds, fp.concurrency, str(fp.fault)) == (30, 1000, "stop-web:web02@5s-15s")


# ---- the samplers' lines ------------------------------------------------------------------------------


def awk(command: str, text: str) -> str:
    """The awk stage of a rotation command, run on `text` (the tool's output)."""
    script = command.split("| awk ", 1)[1]
    return subprocess.run(f"awk {script}", shell=True, input=text, capture_output=True, text=True, check=True).stdout


IPVSADM_STATS = """IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes
  -> RemoteAddress:Port
TCP  192.168.16.100:80                 2040    12240        0   979200        0
  -> 172.16.0.101:80                   1020     6120        0   489600        0
  -> 172.16.0.102:80                   1020     6120        0   489600        0
"""

HAPROXY_STAT = """# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight
haproxy_bmt,FRONTEND,,,0,20,10000,2040,1,2,0,0,0,,,,,OPEN,
web,web01,0,0,0,10,,1021,1,2,,0,,0,0,0,0,UP,1
web,web02,0,0,0,10,,1019,1,2,,0,,3,0,2,1,DOWN 1/2,1
web,BACKEND,0,0,0,20,1000,2040,1,2,0,0,,3,0,2,1,UP,2
"""


def test_ipvs_rotation_lists_each_real_server_with_its_connections():
    spec, mode = lab_of({"mode": "dsr", "ipvsHealthCheck": "keepalived"})
    _, command = mode.rotation(spec)
    assert awk(command, IPVSADM_STATS).split("\n")[:2] == ["172.16.0.101 1 1020", "172.16.0.102 1 1020"]


def test_haproxy_rotation_reads_status_and_sessions():
    spec, mode = lab_of({"mode": "proxy"})
    _, command = mode.rotation(spec)
    assert awk(command, HAPROXY_STAT).split() == ["web01", "1", "1021", "web02", "0", "1019"]


def test_samples_are_put_on_the_hosts_clock():
    text = "@ 1000.5\nserved 10\n@ 1001.5\nserved 25\n@ garbage\nserved 99\n"
    got = timeline.samples(text, timeline.Clock(0.0, 2.0, 0.0, 2.0), t0=990.0)
    assert [(s.t, s.lines) for s in got] == [(8.5, ("served 10",)), (9.5, ("served 25",))]


def test_per_second_counts_increases_and_a_restarted_counter():
    # nginx's counter: +1 per reading itself; it restarts from 0 when nginx is started again. The
    # increases between readings are spread over the seconds they cover (0.8 s of 1.2-2.2 is in 1-2).
    series = [(0.2, 100), (1.2, 151), (2.2, 202), (3.2, 1), (4.2, 40)]
    assert timeline.per_second(series, 5, restarts=True, own=1) == [40, 50, 10, 30, 8]
    assert sum(timeline.per_second(series, 5, restarts=True, own=1)) == 50 + 50 + 0 + 38
    assert timeline.per_second(series, 5) == [41, 51, 10, 31, 8]


def test_a_late_reading_does_not_pile_its_increase_into_one_second():
    # A loaded guest read its counter at 0, 2 and 3 s: the 2 s between the first two are shared.
    assert timeline.per_second([(0.0, 0), (2.0, 100), (3.0, 150)], 3) == [50, 50, 50]


def lb_samples(states: list[tuple[float, bool, int]]) -> list[timeline.Sample]:
    """The LB's samples: web01 always in; web02 as given (a web out of keepalived's table is not listed)."""
    out = []
    for t, in_rotation, sent in states:
        lines = ["172.16.0.101 1 100"] + ([f"172.16.0.102 1 {sent}"] if in_rotation else [])
        out.append(timeline.Sample(t, tuple(lines)))
    return out


def test_keepalived_like_eject_and_readmit_times():
    lb = lb_samples([(t / 2, not (9.0 <= t / 2 < 16.5), 100 + int(t)) for t in range(0, 50)])
    ft = timeline.fault_times(lb, KEYS, "web02", fault_t=5.2, restore_t=15.1)
    assert (ft.eject_s, ft.readmit_s) == (3.8, 1.4)
    assert ft.sent_while_down == 7  # from 110 at 5.0 s to 117 at 8.5 s, its last reading before it left
    assert timeline.in_rotation(lb, KEYS, "web02", 25)[7:18] == [1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1]


def test_static_rules_never_eject_and_the_count_goes_on():
    lb = lb_samples([(t / 2, True, 100 + 3 * t) for t in range(0, 50)])
    ft = timeline.fault_times(lb, KEYS, "web02", fault_t=5.0, restore_t=15.0)
    assert ft.eject_s is None and ft.sent_while_down == 60
    assert ft.readmit_s == 0.0  # it never left: in rotation at the first reading after the restore


def fault_plan_for(action: str = "stop-web", uri: str = "test:///default") -> FaultPlan:
    return FaultPlan(Fault(action, "web02", 5, 15), 25, 20, "keepalived", "true", KEYS, uri)


def test_record_puts_every_vm_on_one_time_line():
    t0 = 5000.0
    lb = "".join(
        f"@ {t0 + k / 2 + 1.0}\n172.16.0.101 1 {k}\n" + (f"172.16.0.102 1 {k}\n" if not 12 <= k < 32 else "")
        for k in range(50)
    )  # its clock 1 s ahead; web02 out from 6 s to 16 s
    client = "".join(f"@ {t0 + k - 0.5}\ntcp {10 * k} {3 if k >= 5 else 0} 0\nsynretrans 0\n" for k in range(25))
    web = "".join(f"@ {t0 + k + 0.1}\nserved {11 * k}\n" for k in range(25))
    texts = {"lb": lb, "client01": client, "web01": web, "web02": web}
    offsets = {n: timeline.Clock(t0, o, t0 + 30, o) for n, o in {"lb": 1.0, "client01": -0.5}.items()}
    rec = faultrun.record(
        fault_plan_for(),
        texts,
        offsets,
        t0,
        {"fault": 5.0, "fault_done": 7.5, "restore": 15.0},
        "lb",
        ["client01"],
        ["web01", "web02"],
    )
    assert (rec["eject_s"], rec["readmit_s"]) == (1.0, 1.0)
    assert rec["fault_done_at_s"] == 7.5  # the stop returned 2.5 s after it was sent
    assert rec["lb_reading_gap_s"] == 0.5  # the LB's rotation, read each half second
    assert rec["timeline"]["served"][1:4] == [20, 20, 20] and rec["timeline"]["served_by_web"][2] == 10
    assert rec["timeline"]["connection_errors"][3:7] == [0, 3, 0, 0]  # between its readings at 4 s and 5 s
    assert rec["client_reading_gap_s"] == 1.0  # the client's readings, 1 s apart
    assert rec["timeline"]["in_rotation"][5:17] == [1] + [0] * 10 + [1]
    assert faultrun.flags(rec, 0) == []


def test_a_late_reading_spreads_errors_over_its_gap_and_the_record_says_how_far():
    """A loaded client read at 10.9 s and then only at 13.1 s, with 18 refused connections between:
    they show in seconds 10 to 13, and the record's gap (2.2 s) says how far from its second a count
    may lie. Readings before the run's start or after its end do not count toward the gap."""
    t0 = 1000.0
    at = [-6.0, 0.0, 1.0, 9.0, 10.9, 13.1, 14.0, 20.0, 25.0, 40.0]
    fails = [0, 0, 0, 0, 0, 18, 18, 18, 18, 18]
    client = "".join(f"@ {t0 + t}\ntcp 0 {f} 0\nsynretrans 0\n" for t, f in zip(at, fails, strict=True))
    found = timeline.samples(client, timeline.SAME, t0)
    assert timeline.reading_gap(found, 25) == 8.0  # 1 s to 9 s, inside the run; not -6 s to 0 s nor 25 s to 40 s
    assert timeline.reading_gap(found[3:7], 25) == 2.2
    errors = timeline.per_second([(x.t, timeline.counters(x)["attempt_fails"]) for x in found[3:7]], 25)
    assert errors[10:14] == [1, 8, 8, 1] and sum(errors) == 18
    assert timeline.reading_gap([], 25) == 0.0


def test_flags_say_a_web_that_was_never_taken_out():
    rec = {
        "web": "web02",
        "health_check": "none (static rules)",
        "eject_s": None,
        "readmit_s": 0.0,
        "sent_while_down": 42,
    }
    assert faultrun.flags(rec, 9) == [
        "web02 never taken out (none (static rules)): the LB sent it 42 connection(s) while it was down",
        "9 request(s) failed",
    ]


# ---- a real fault run (dsr with keepalived, stop-web:web02@5s-15s, lab stack) ----------------------------

REAL = DATA / "fault-dsr-keepalived"


def test_ab_counts_each_failed_request_once():
    """ab -r counts a refused connection three times (Exceptions, Receive, Length): 1622 in its
    report, (Receive: 542, Length: 542, Exceptions: 538), 542 requests; its 4734 "complete" hold them."""
    text = (DATA / "ab-dsr-keepalived-stop-web.txt").read_text()
    assert "Failed requests:        1622" in text and "Complete requests:      4734" in text
    r = parse_ab(text)
    assert r.failed_requests == 542 and r.complete_requests == 4734 - 542


def test_the_real_run_reads_as_keepalived_ejecting_and_readmitting():
    texts = {name: (REAL / f"fault.{name}.samples.txt").read_text() for name in ("lb", "client01", "web01", "web02")}
    # The load's start on the client's clock (its ab output); the guests' clocks are taken as one here.
    t0 = clock_start((DATA / "ab-dsr-keepalived-stop-web.txt").read_text()) / 1e9
    rec = faultrun.record(
        fault_plan_for(), texts, {}, t0, {"fault": 9.3, "restore": 19.7}, "lb", ["client01"], ["web01", "web02"]
    )
    assert rec["eject_s"] is not None and 0 < rec["eject_s"] <= 2 * 3 + 2  # within fall x interval, and a margin
    assert rec["readmit_s"] is not None and 0 <= rec["readmit_s"] <= 2 + 2
    line = rec["timeline"]["in_rotation"]
    assert 1 in line[:9] and 0 in line[10:19]
    assert sum(rec["timeline"]["connection_errors"]) > 0
    assert 1.0 < rec["client_reading_gap_s"] < 3.0  # a loaded client's readings: about 2 s apart, asked for each 1 s


# ---- a fault it cannot undo is one readable error ------------------------------------------------------


@pytest.mark.skipif(not shutil.which("virsh"), reason="needs libvirt's client")
def test_a_pause_that_cannot_be_undone_fails_the_run_and_says_how_to_undo_it():
    """libvirt's test driver for real: `suspend` works, and each virsh call is a new connection to a
    fresh test host, so `resume` finds the domain running and fails, as a lost host would."""
    fp = FaultPlan(Fault("kill-web", "web02", 0, 1), 5, 20, "keepalived", "true", KEYS, "test:///default")
    web = VmRef("web02", "web", "172.16.0.102", "test", "")
    injector = Injector(None, fp, web)  # type: ignore[arg-type]  # kill-web runs virsh only
    with pytest.raises(FaultFailed) as e:
        faultrun.run_during(lambda t0: ["ran"], fp, injector, lead_s=0.0)
    text = str(e.value)
    assert "the fault run on web02 (kill-web:web02@0s-1s): could not pause its VM or bring it back" in text
    assert "not paused" in text and "`virsh -c test:///default resume test` brings it back" in text


def test_a_failed_load_still_restores_the_web(tmp_path):
    """The web's session is a real process here (a shell that logs what it is asked): the fault is
    done at 0 s, the load then fails, and the web is started again before the error goes up."""
    log = tmp_path / "asked"

    class Ssh:
        def argv(self, address, command):
            assert "systemctl stop nginx" in command and "systemctl start nginx" in command
            return [
                "sh",
                "-c",
                f'echo ready; while read what; do echo "$what" >> {log}; echo 0; done',
            ]

    fp = FaultPlan(Fault("stop-web", "web02", 0, 30), 40, 20, "HAProxy check", "true", KEYS, "")
    injector = Injector(Ssh(), fp, VmRef("web02", "web", "172.16.0.102", "d", ""))  # type: ignore[arg-type]

    def load(t0):
        deadline = time.monotonic() + 10
        while not injector.down:  # the fault (at 0 s) has happened
            assert time.monotonic() < deadline, "the fault was never injected"
            time.sleep(0.01)
        raise RuntimeError("client lost")

    with pytest.raises(RuntimeError, match="client lost"):
        faultrun.run_during(load, fp, injector, lead_s=0.0)
    assert log.read_text().split() == ["stop", "start"] and not injector.down and injector.session is None


def test_a_web_that_refuses_the_fault_is_one_readable_error(tmp_path):
    class Ssh:
        def argv(self, address, command):
            return ["sh", "-c", "echo ready; while read what; do echo 5; done"]

    fp = FaultPlan(Fault("stop-web", "web02", 0, 1), 5, 20, "keepalived", "true", KEYS, "")
    injector = Injector(Ssh(), fp, VmRef("web02", "web", "172.16.0.102", "d", ""))  # type: ignore[arg-type]
    with pytest.raises(
        FaultFailed,
        match=r"could not stop its nginx or bring it back: web02: `systemctl stop nginx` failed \(exit 5\)",
    ):
        faultrun.run_during(lambda t0: ["ran"], fp, injector, lead_s=0.0)


@pytest.mark.parametrize("name", lbmodes.MODES)
def test_every_modes_rotation_command_reads_what_its_lb_prints(name):
    """The awk stage of each mode's rotation command, fed what its LB prints, gives one line per web:
    its key, 1 when in rotation (0 when the LB has it down), what it was sent so far."""
    spec, mode = lab_of({"mode": name})
    checker, command = mode.rotation(spec)
    sample, expected = (
        (IPVSADM_STATS, [["172.16.0.101", "1", "1020"], ["172.16.0.102", "1", "1020"]])
        if "ipvsadm" in command
        else (HAPROXY_STAT, [["web01", "1", "1021"], ["web02", "0", "1019"]])
    )
    assert [line.split() for line in awk(command, sample).splitlines()] == expected
    assert {key for key, _, _ in expected} <= set(KEYS)  # the fault run maps each key to its web
    assert checker in ("HAProxy check", "keepalived", "none (static rules)")


def test_the_fault_is_when_it_was_sent_and_the_restore_when_it_was_done():
    """On the host's clock (a loaded guest's lags): the stop when sent, the start when it returned."""

    class Ssh:
        def argv(self, address, command):
            return ["sh", "-c", "echo ready; while read what; do sleep 0.3; echo 0; done"]

    fp = FaultPlan(Fault("stop-web", "web02", 0, 1), 5, 20, "keepalived", "true", KEYS, "")
    injector = Injector(Ssh(), fp, VmRef("web02", "web", "172.16.0.102", "d", ""))  # type: ignore[arg-type]
    injector.open()
    try:
        before = time.time()
        sent = injector.fail()
        assert before <= sent < before + 0.1
        before = time.time()
        done = injector.restore()
        assert done >= before + 0.3
    finally:
        injector.close()


def test_a_lagging_clock_is_placed_between_its_two_measurements():
    """Offset 0 before the run (host 1000), 2 s behind after it (host 1100): a reading stamped 1049
    by the guest was taken at the host's 1050."""
    clock = timeline.Clock(1000.0, 0.0, 1100.0, -2.0)
    assert abs(clock.host(1049.0) - 1050.0) < 0.05 and clock.host(1000.0) == 1000.0


def test_a_paused_vms_clock_stood_still_while_it_was_paused():
    """kill-web: web02's clock was 10 s behind after a 10 s pause; its readings before the resume
    (host 1015) keep the first offset, those after take the second."""
    clock = timeline.Clock(1000.0, -0.4, 1030.0, -10.4, paused_until=1015.0)
    assert abs(clock.host(1004.0) - 1004.4) < 1e-9 and abs(clock.host(1010.0) - 1020.4) < 1e-9
