"""SSH to the lab's VMs with the stack's key: plain OpenSSH, bounded, no host-key prompts."""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import runtime
from runtime.hostfacts import assert_in_lab_namespace
from runtime.hostshell import HostRef
from runtime.vm import VmRef


class SshError(RuntimeError):
    """A command on a VM that failed, timed out or never ran; what it printed is kept for the report."""

    def __init__(self, message: str, address: str = "", command: str = "", outcome: str = "", output: str = ""):
        super().__init__(message)
        self.address, self.command, self.outcome, self.output = address, command, outcome, output

    def last_lines(self, count: int = 6) -> list[str]:
        return [line for line in self.output.strip().splitlines() if line.strip()][-count:]


@dataclass(frozen=True)
class Ssh:
    user: str
    key_file: str

    # Generous on purpose: sshd re-executes itself per connection, which under software emulation on a
    # busy guest can take several seconds; a short timeout abandons handshakes that then keep the guest
    # busy until sshd's LoginGraceTime, so each retry makes the next one slower.
    connect_timeout: int = 30
    # Guests on a remote libvirt host are reached through it: address -> that host (runtime/hostshell.py).
    via: dict[str, HostRef] = field(default_factory=dict)

    @classmethod
    def to(cls, user: str, key_file: str, vms: list[VmRef]) -> Ssh:
        """SSH to these VMs, each through its host when that host is remote."""
        return cls(user, key_file, via={vm.address: vm.host for vm in vms if vm.host.remote})

    def argv(self, address: str, command: str) -> list[str]:
        assert_in_lab_namespace()  # every SSH of the project is built here
        return [
            "ssh",
            "-i",
            self.key_file,
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            f"ConnectTimeout={self.connect_timeout}",
            "-o",
            "ServerAliveInterval=15",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "IdentityAgent=none",
            *(["-o", f"ProxyCommand={self.via[address].proxy_command()}"] if address in self.via else []),
            f"{self.user}@{address}",
            command,
        ]

    def run(
        self, address: str, command: str, timeout: float = 120, check: bool = True, cancellable: bool = True
    ) -> subprocess.CompletedProcess:
        """One command; bounded by `timeout`, and (if `cancellable`) ended within a second when the
        operation is cancelled. Clean-up after a cancel runs with cancellable=False."""
        cancelled = runtime.cancelled if cancellable else threading.Event()
        argv = self.argv(address, command)
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + timeout
        while True:
            try:
                out, err = proc.communicate(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if not (cancelled.is_set() or time.monotonic() > deadline):
                    continue
                proc.kill()
                proc.communicate()
                if cancelled.is_set():
                    raise runtime.Cancelled(f"{address}: `{command[:80]}`") from None
                outcome = f"it did not finish within {timeout:.0f} s"
                raise SshError(f"{address}: `{command}`: {outcome}", address, command, outcome) from None
        done = subprocess.CompletedProcess(argv, proc.returncode, out, err)
        if check and done.returncode != 0:
            outcome = "SSH could not log in" if done.returncode == 255 else f"it exited {done.returncode}"
            raise SshError(
                f"{address}: `{command}`: {outcome}: {(done.stderr or done.stdout).strip()[-400:]}",
                address,
                command,
                outcome,
                f"{done.stdout}\n{done.stderr}",
            )
        return done

    def wait_reachable(self, address: str, deadline: float) -> None:
        """Retry until sshd answers with our key, or the deadline (monotonic) passes."""
        last = ""
        while time.monotonic() < deadline:
            try:
                done = self.run(address, "true", timeout=60, check=False)
            except SshError:
                last = "no answer within 60 s"
                continue
            if done.returncode == 0:
                return
            last = done.stderr.strip()
            runtime.sleep(5, f"{address}: waiting for SSH")
        raise SshError(f"{address}: no SSH login before the deadline (last: {last or 'no answer'})")


class KeyFile:
    """The private key in a 0600 temporary file for the length of a `with` block."""

    def __init__(self, private_key: str):
        self.private_key = private_key
        self.path = ""

    def __enter__(self) -> str:
        fd, self.path = tempfile.mkstemp(prefix="l2dsr-key-")
        with os.fdopen(fd, "w") as f:
            f.write(self.private_key if self.private_key.endswith("\n") else self.private_key + "\n")
        return self.path

    def __exit__(self, *_exc) -> None:
        Path(self.path).unlink(missing_ok=True)
