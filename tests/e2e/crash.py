"""`kill -9` of the engine at chosen moments, and what must hold afterwards: its plugins end by
themselves, the journal names every volume the state does not, `./labctl up` alone recovers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from hypervisor import paths, pulumi_cli, recovery
from runtime import hostfacts
from tests.e2e.lab import STACK
from tests.stacks import failure_text
from virt.virsh import Virsh


def processes_with(text: str) -> set[int]:
    done = subprocess.run(["pgrep", "-f", text], capture_output=True, text=True)
    return {int(p) for p in done.stdout.split()}


def children_of(pid: int) -> set[int]:
    done = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return {int(p) for p in done.stdout.split()}


def state_volumes(cli) -> list[str]:
    state = json.loads(cli("stack", "export").stdout)
    return sorted(
        r["outputs"]["name"]
        for r in state["deployment"].get("resources", [])
        if r["type"].endswith(("l2dsr:Volume", "l2dsr:CloudInitDisk")) and "name" in r.get("outputs", {})
    )


def kill_the_engine_when(cli, moment, what: str, times: dict) -> None:
    """`pulumi up` started, `kill -9` once `moment()` holds; its language and provider hosts must then
    end by themselves."""
    argv = [str(pulumi_cli.bin_dir() / "pulumi"), "up", "--yes", "--skip-preview", "--stack", cli.stack]
    with tempfile.TemporaryFile("w+") as log:  # what the engine said, shown when it ends before the moment
        engine = subprocess.Popen(argv, cwd=cli.project_dir, env=cli.env, stdout=log, stderr=subprocess.STDOUT)
        start = time.monotonic()
        while not moment():
            if engine.poll() is not None:
                log.seek(0)
                said = failure_text(log.read())
                raise AssertionError(f"pulumi up ended ({engine.returncode}) before {what}:\n{said}")
            assert time.monotonic() - start < 1200, f"not {what} within 20 min"
            time.sleep(0.2)
        plugins = children_of(engine.pid)
        assert plugins, "the engine has no plugin process to orphan"
        engine.send_signal(signal.SIGKILL)
        engine.wait()
    killed = time.monotonic()
    times[f"killed_{what.replace(' ', '_')}_after_s"] = round(killed - start, 1)
    while plugins & {p for p in plugins if os.path.exists(f"/proc/{p}")}:
        assert time.monotonic() - killed < 120, f"our plugins outlived their engine: {plugins}"
        time.sleep(0.5)
    times[f"plugins_ended_after_kill_{what.replace(' ', '_')}_s"] = round(time.monotonic() - killed, 1)


def in_flight_volumes() -> set[str]:
    """The volumes the providers' journal names: made by a create no state has yet been seen to hold
    (resources/volume.py)."""
    journal = hostfacts.in_flight_dir()
    return {json.loads(p.read_text())["name"] for p in journal.glob(f"l2dsr-{STACK}-*.json")}


def crash_during_the_boots_then_up(cli, virsh: Virsh, times: dict, seen: dict) -> None:
    """`kill -9` of `pulumi up` as its first volume is made, then again while the guests boot, then
    `./labctl up` and nothing else: each killed engine's language and provider hosts end by
    themselves, the stale lock is cleared by ./labctl saying so, the lab comes up, and no volume is
    left that the state does not name (the one in flight at the first kill among them)."""
    prefix = f"l2dsr-{STACK}-"

    def ours() -> list[str]:
        return [v for v in virsh.names("vol-list", "--pool", "default") if v.startswith(prefix)]

    def unrecorded(when: str) -> set[str]:
        """Once the killed engine's plugins have ended: the volumes its state does not name, each of
        which the journal must name (the next create of its resource removes it)."""
        left = set(ours()) - set(state_volumes(cli))
        seen[f"unrecorded_at_{when}"] = sorted(left)
        assert left <= in_flight_volumes(), ("volumes neither the state nor the journal names", left)
        return left

    kill_the_engine_when(cli, lambda: bool(ours()), "a volume made", times)
    in_flight = unrecorded("the_first_kill")
    recovery.clear_stale_locks(Path(cli.env["PULUMI_BACKEND_URL"].removeprefix("file://")), cli.stack)
    kill_the_engine_when(
        cli, lambda: any(d.startswith(prefix) for d in virsh.names("list", "--name")), "a guest booting", times
    )
    in_flight |= unrecorded("the_second_kill")
    start = time.monotonic()
    done = subprocess.run(
        [str(paths.PROJECT_DIR / "labctl"), "up", cli.stack],
        cwd=paths.PROJECT_DIR,
        env=cli.env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    said = done.stdout + done.stderr
    assert done.returncode == 0, failure_text(said)
    times["up_after_the_kill_s"] = round(time.monotonic() - start, 1)
    assert "removed the lock of pulumi pid" in said, said[-3000:]
    assert sorted(ours()) == state_volumes(cli), "volumes the state does not name"
    assert not in_flight & set(ours()), in_flight
    assert not processes_with("l2dsr-mux"), "SSH masters left"
    seen["crash_during_boots"] = [line for line in said.splitlines() if "lock" in line or "leftover" in line]
