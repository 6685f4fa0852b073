"""Faults on purpose: a web failing during a run (the fault run's record held to windows taken from
the run itself), faults inside the guests that must stop the benchmark with one readable error each,
and a run that makes every flag fire."""

from __future__ import annotations

import math
import time

from guest import render
from runtime.ssh import KeyFile, Ssh
from tests.conftest import stack_outputs
from tests.e2e.lab import ROLE_UNITS, active_units, bench_again, check_ipvs_paths, lab_ssh, on_lab, private_key

HOG = "chunks = []\nwhile True: chunks.append(bytearray(16 * 2**20))"
# Faults inside the guests of the running dsr lab: (what, break it, mend it, what the error must say).
FAULTS = [
    (
        "a web loses the VIP",
        ("web02", "sudo ip addr del {vip}/32 dev lo"),
        ("web02", "sudo ip addr replace {vip}/32 dev lo"),
        ["checking the paths through the VIP", "none reached web02", "its VIP and its route"],
    ),
    (
        "a web's nginx stops",
        ("web01", "sudo systemctl stop nginx"),
        ("web01", "sudo systemctl start nginx"),
        ["checking the paths through the VIP", "web01"],
    ),
    (
        "the load tool cannot run on a client",
        ("client02", "sudo mv /usr/bin/ab /usr/bin/ab.off"),
        ("client02", "sudo mv /usr/bin/ab.off /usr/bin/ab"),
        ["run 1 of", "client02: ab", "did not report a result", "not found"],
    ),
    (
        "a web refuses SSH",
        # sshd comes back by itself 45 s later (a timer set first), so the lab can be mended
        ("web02", "sudo systemd-run --on-active=45 systemctl start ssh && sudo systemctl stop ssh"),
        ("web02", "true"),
        ["on web02", "SSH could not log in", "Connection refused"],
    ),
    (
        "a web runs out of memory during the run",
        # a process that allocates until the kernel kills it, started again 2 s later, all along
        ("web02", f"sudo systemd-run --unit l2dsr-hog -p Restart=always -p RestartSec=2 python3 -c '{HOG}'"),
        ("web02", "sudo systemctl stop l2dsr-hog"),
        ["run 1 of 1", "web02: out of memory: the kernel killed a process", "(python3)", "its results are not results"],
    ),
]


def provoke_failures(cli) -> list[str]:
    """Each fault: the benchmark fails with one readable error naming the VM and what it saw (no
    traceback), and after the mend the next benchmark passes."""
    key, vms = on_lab(cli)
    vip = stack_outputs(cli)["vip"]
    said = []
    with KeyFile(key) as key_file:
        ssh = Ssh(render.LOGIN_USER, key_file)
        for i, (what, (vm, fault), (mend_vm, mend), expected) in enumerate(FAULTS):
            ssh.run(vms[vm], fault.format(vip=vip))
            failed = bench_again(cli, f"fault-{i}")
            text = failed.stdout + failed.stderr
            error = [line.strip() for line in text.splitlines() if "benchmark, " in line]
            said.append(f"{what}: {error[0] if error else text[-600:]}")
            ssh.wait_reachable(vms[mend_vm], time.monotonic() + 120)
            ssh.run(vms[mend_vm], mend.format(vip=vip))
            assert failed.returncode != 0, f"{what}: the benchmark passed"
            assert "Traceback" not in text, f"{what}: {text[-3000:]}"
            assert error and all(e in text for e in expected), f"{what}: expected {expected} in:\n{text[-3000:]}"
    assert bench_again(cli, "mended").returncode == 0
    return said


# 20 frames a second to the LB's MAC (argv[1]) with ethertype 0x88b5 (local experimental), from eth0.
FRAMES = (
    'import socket, sys, time; s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind(("eth0", 0)); '
    'f = bytes.fromhex(sys.argv[1]) + s.getsockname()[4] + bytes.fromhex("88b5") + bytes(46)\n'
    "while True: s.send(f); time.sleep(0.05)"
)


def provoke_flags(cli) -> dict:
    """One run that makes the flags fire, for real: a web whose listen queue holds one connection
    (web01: somaxconn 1, nginx restarted to take it), a client whose CPU a busy loop holds, the LB's
    scheduler weighting web01 three times web02 (wrr), and frames of a protocol the LB has no
    handler for, which its kernel drops (eth0's rx_dropped). The run passes, its rows say what
    happened."""
    key, vms = on_lab(cli)
    vip = stack_outputs(cli)["vip"]
    with KeyFile(key) as key_file:
        ssh = Ssh(render.LOGIN_USER, key_file)
        ssh.run(vms["web01"], "sudo sysctl -qw net.core.somaxconn=1 && sudo systemctl restart nginx")
        ssh.run(vms["client01"], "sudo systemd-run --unit l2dsr-busy timeout 900 sh -c 'while :; do :; done'")
        ssh.run(
            vms["lb"],
            f"sudo ipvsadm -E -t {vip}:80 -s wrr && sudo ipvsadm -e -t {vip}:80 -r {vms['web01']}:80 -g -w 3",
        )
        lb_mac = ssh.run(vms["lb"], "cat /sys/class/net/eth0/address").stdout.strip().replace(":", "")
        ssh.run(vms["client02"], f"sudo systemd-run --unit l2dsr-frames timeout 900 python3 -c '{FRAMES}' {lb_mac}")
        try:
            assert bench_again(cli, "flags").returncode == 0
        finally:
            ssh.run(vms["client02"], "sudo systemctl stop l2dsr-frames", check=False)
            ssh.run(vms["client01"], "sudo systemctl stop l2dsr-busy", check=False)
            ssh.run(
                vms["web01"], "sudo sysctl -qw net.core.somaxconn=65535 && sudo systemctl restart nginx", check=False
            )
    out = stack_outputs(cli)
    flags = {f for run in out["results"] for f in run["flags"]}
    assert any(f.startswith("client CPU saturated: client01") for f in flags), flags
    assert any(f.startswith("unbalanced connections: web01") for f in flags), flags
    assert any(f.startswith("drops on web01:") and "listen_overflows" in f for f in flags), flags
    assert any(f.startswith("drops on lb:") and "rx_dropped" in f for f in flags), flags
    assert "unbalanced connections" in out["resultsTable"]
    return {"flags": sorted(flags), "resultsTable": out["resultsTable"]}


# The fault run's fault, and how far its measured times may be from the checks' own (2 s interval,
# fall 3; HAProxy's rise 2, keepalived's one passing check). Every window is taken from the run's own
# record: the web failed somewhere between when its stop was sent and when it returned (a loaded
# emulated web acts on it seconds late), the LB's rotation and the clients' counters are known only
# as finely as their readings were apart, and the web is back only once its start returned (9.5 s
# after it was sent, on a slow machine). Measured on a machine twice as slow as CI's: the stop took
# 9.6 s to return, the ejection came 12.5 s after the stop was sent, the clients read 4.4 s apart;
# the restore returned 8.8 s late; on CI's once 10.9 s late (readmitted 4.3 s later, the run then had
# 10 s left), and a host whose cores are busy may double each. 40 s down and 40 s after the restore
# leave room for that.
FAULT = {"benchFault": "stop-web:web02@5s-45s", "benchFaultSeconds": 85}
CHECK_INTERVAL_S, FALL, MARGIN_S = 2, 3, 5.0  # the margin: the check's phase and a reading


def fault_windows(fault: dict, rise: int) -> dict[str, float]:
    """The bounds check_fault holds the record to, each from what the record says happened (pure)."""
    stop_took = fault["faultDoneAtS"] - fault["faultAtS"]
    lb_gap = fault["lbReadingGapS"]
    return {
        "eject_by_s": stop_took + FALL * CHECK_INTERVAL_S + lb_gap + MARGIN_S,
        "readmit_by_s": rise * CHECK_INTERVAL_S + lb_gap + MARGIN_S,
        # from 2 s after the ejection (connections already sent to the web end then), widened by the
        # clients' longest gap between readings (a second's count is interpolated across it)
        "errors_from_s": math.ceil(fault["faultAtS"] + fault["ejectS"] + 2 + fault["clientReadingGapS"]),
        "errors_until_s": int(fault["restoredAtS"]),
    }


def check_fault(out: dict, health_check: str, rise: int) -> dict:
    """The fault run's record: web02 taken out within fall x interval of failing (never without a health
    check), back within rise x interval of its restore, no connection error once it was out until it
    came back, and web02 serving again after its readmission."""
    fault = out["fault"]
    assert fault["healthCheck"] == health_check and fault["fault"] == FAULT["benchFault"], fault
    line = fault["timeline"]
    assert len(line["served"]) == FAULT["benchFaultSeconds"] and sum(line["served"]) > 0, line
    if health_check.startswith("none"):
        assert not fault["ejected"] and fault.get("ejectS") is None and fault["sentWhileDown"] > 0, fault
        assert any("never taken out" in f for f in fault["flags"]), fault["flags"]
        assert sum(line["connectionErrors"]) > 0, line  # the dead web's share failed all along
        return summary_of(fault)
    w = fault_windows(fault, rise)
    assert fault["ejected"] and fault["ejectS"] <= w["eject_by_s"], (w, fault)
    if not fault["readmitted"]:
        # A readmission the run did not see is the LB's failure only if the run held its whole window;
        # a restore that returned too late for that is the test's window, said as such.
        assert fault["restoredAtS"] + w["readmit_by_s"] < fault["seconds"] - 2, (
            "the run ended too soon after the restore to see a readmission",
            w,
            fault,
        )
    assert fault["readmitted"] and fault["readmitS"] <= w["readmit_by_s"], (w, fault)
    assert w["errors_until_s"] - w["errors_from_s"] >= 2, (
        "no seconds left to check between the ejection and the restore",
        w,
        fault,
    )
    assert sum(line["connectionErrors"][int(w["errors_from_s"]) : int(w["errors_until_s"])]) == 0, (w, line)
    back = math.ceil(fault["restoredAtS"] + fault["readmitS"] + fault["lbReadingGapS"])
    assert sum(line["servedByWeb"][back:]) > 0, (back, line)  # web02 serves again
    return summary_of(fault)


def summary_of(fault: dict) -> dict:
    keys = ("healthCheck", "faultAtS", "faultDoneAtS", "restoredAtS", "ejectS", "readmitS", "sentWhileDown")
    return {k: fault.get(k) for k in (*keys, "failedRequests")} | {
        "requests": fault["totalRequests"],
        "flags": fault["flags"],
    }


def check_keepalived_lb(cli) -> None:
    """The new LB inside: keepalived owns the IPVS service (no l2dsr-ipvs unit, no HAProxy), every web
    is in its table by the mode's method, no OOM kill. (The webs are not this phase's: the fault
    cases before it ran web02 out of memory on purpose.)"""
    out = stack_outputs(cli)
    vms = {vm["name"]: vm for vm in out["vms"]}
    lb = next(vm["address"] for vm in vms.values() if vm["role"] == "lb")
    with KeyFile(private_key(cli)) as key:
        ssh = lab_ssh(out, key)
        assert active_units(ssh, lb) & ROLE_UNITS == {"keepalived.service"}
        assert ssh.run(lb, "sudo dmesg | grep -c 'Out of memory' || true").stdout.strip() == "0"
        check_ipvs_paths(ssh, vms, "dsr", out["vip"])
