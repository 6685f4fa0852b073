"""A deliberately broken web fails `pulumi up` at once, with one readable error, through the real engine.

The project is copied and its nginx.conf given a directive nginx refuses: web01's cloud-init ends in
error when nginx does not start. The up must stop soon after (not at a boot budget), name the VM,
show nginx's own complaint, carry no Python traceback, and stop waiting for the other VMs.
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import pytest

from hypervisor import libvirt, paths
from tests.stacks import lab_stack, project_copy
from virt.virsh import Virsh
from virt.xml import console_log_path

pytestmark = pytest.mark.lab
STACK = "broken"
CONFIG = {  # subnets of its own: never clashes with another stack on the host
    "webCount": 1,
    "frontSubnet": "192.168.97.0/24",
    "serverSubnet": "172.16.97.0/24",
    "firstWebAddress": "172.16.97.101",
    "vip": "192.168.97.100",
    "benchConcurrency": [10],
    "benchRequests": [100],
}
BROKEN = "l2dsr_broken_on_purpose on;"


def broken_copy(tmp_path: Path) -> Path:
    project = project_copy(tmp_path / "project")
    conf = project / "cloudinit" / "web" / "nginx.conf"
    conf.write_text(conf.read_text().replace("pid /run/nginx.pid;", f"pid /run/nginx.pid;\n{BROKEN}"))
    assert BROKEN in conf.read_text()
    return project


def watch_for(path: str, text: str, seen: dict, stop: threading.Event) -> None:
    while not stop.wait(0.5):
        try:
            if text in Path(path).read_text(errors="replace"):
                seen["at"] = time.monotonic()
                return
        except FileNotFoundError:
            pass


def test_a_broken_web_fails_up_fast_with_one_readable_error(tmp_path):
    project = broken_copy(tmp_path)
    console = console_log_path(f"l2dsr-{STACK}-web01")
    Path(console).unlink(missing_ok=True)  # ours (l2dsr-broken-*): a previous run's must not count
    seen: dict = {}
    stop = threading.Event()
    watcher = threading.Thread(target=watch_for, args=(console, "l2dsr web01 (web) ready after", seen, stop))
    measured: dict = {}
    with lab_stack(tmp_path, STACK, project_dir=project, **CONFIG) as cli:
        try:
            watcher.start()
            start = time.monotonic()
            up = cli("up", "--yes", "--skip-preview", check=False, timeout=1800)
            ended = time.monotonic()
            stop.set()
            out = up.stdout + up.stderr
            measured = {"up_s": round(ended - start, 1)}
            if "at" in seen:
                measured["failed_after_cloud_init_finished_s"] = round(ended - seen["at"], 1)
            (tmp_path / "up.txt").write_text(out)
            print(f"\nfail-fast measurements: {measured}\n{out[-6000:]}")

            assert up.returncode != 0
            assert "web01 (l2dsr-broken-web01, 172.16.97.101): cloud-init ended in error" in out
            assert f'unknown directive "{BROKEN.split()[0]}"' in out  # nginx's own words, from the guest
            assert "Traceback" not in out
            # The error itself, up to the engine's next progress line: one screen.
            lines = out[out.index("error: web01 (l2dsr-broken-web01") :].splitlines()
            end = next(
                (i for i, line in enumerate(lines[1:], 1) if not line.strip() or re.match(r"\s*[+@] ", line)), None
            )
            block = "\n".join(lines[:end])
            assert len(block.splitlines()) <= 45, block
            assert "at" in seen, "web01's cloud-init never printed its final message"
            # Fails on what the guest says, not on a timeout: soon after cloud-init gave up.
            assert measured["failed_after_cloud_init_finished_s"] < 60, measured
            assert re.search(
                r"(lb|client01): stopped waiting after \d+ s: web01 failed first|lb ready|client01 ready", out
            )
        finally:
            stop.set()
            cli("destroy", "--yes", "--skip-preview", timeout=1200)
            cli("stack", "rm", "--yes")
            out_dir = paths.PROJECT_DIR / "results" / "measurements"
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "failfast.json").write_text(json.dumps(measured, indent=1))
    virsh = Virsh(libvirt.URI)
    left = [d for d in virsh.run("list", "--all", "--name").split() if d.startswith(f"l2dsr-{STACK}")]
    assert left == []
