"""SSH to the lab's VMs with the stack's key: plain OpenSSH, bounded, no host-key prompts.

`Ssh.multiplexed()` keeps one master connection per VM for the length of a `with` block (the
benchmark's): each later command is a new channel on it, not a new handshake, which under software
emulation costs a guest seconds of CPU (sshd re-executes itself and does the key exchange).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
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
    # Set by multiplexed(): the directory of the master connections' sockets, one per address.
    control_dir: str = ""

    # A master ends by itself this long after its last channel, should the `with` block never end.
    CONTROL_PERSIST_S = 300

    @classmethod
    def to(cls, user: str, key_file: str, vms: list[VmRef]) -> Ssh:
        """SSH to these VMs, each through its host when that host is remote."""
        return cls(user, key_file, via={vm.address: vm.host for vm in vms if vm.host.remote})

    def argv(self, address: str, command: str) -> list[str]:
        return self._argv(address, self._control(address, "no"), [command])

    def _control(self, address: str, master: str = "") -> list[str]:
        if not self.control_dir:
            return []
        return [
            *(["-o", f"ControlMaster={master}"] if master else []),
            "-o",
            f"ControlPath={self.control_dir}/{address}",
        ]

    def _argv(self, address: str, extra: list[str], command: list[str]) -> list[str]:
        assert_in_lab_namespace()  # every SSH of the project is built here
        return [
            "ssh",
            *extra,
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
            *command,
        ]

    @contextmanager
    def multiplexed(self) -> Iterator[Ssh]:
        """This Ssh with one master connection per address, opened on first use (or by connect())
        and ended when the block ends. A command to an address whose master could not be opened
        connects on its own, as without multiplexing (OpenSSH falls back when the socket is absent)."""
        directory = tempfile.mkdtemp(prefix="l2dsr-mux-")  # short: a socket's path is at most 107 bytes
        ssh = dataclasses.replace(self, control_dir=directory)
        _MASTERS[directory] = {}
        try:
            yield ssh
        finally:
            for address in _MASTERS.pop(directory, {}):
                _TRIED.discard((directory, address))
                if Path(directory, address).exists():
                    subprocess.run(
                        ssh._argv(address, [*ssh._control(address), "-O", "exit"], []),
                        capture_output=True,
                        timeout=30,
                        check=False,
                    )
            shutil.rmtree(directory, ignore_errors=True)

    def connect(self, addresses: list[str]) -> None:
        """Open the masters of these addresses at once (no-op without multiplexing)."""
        if self.control_dir:
            threads = [threading.Thread(target=self._master, args=(a,), daemon=True) for a in addresses]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

    def _master(self, address: str) -> None:
        """The address's master connection, tried once: `ssh -M -N -f` returns once it is logged in
        and stays in the background (its output goes nowhere, so no pipe of ours waits on it)."""
        masters = _MASTERS.get(self.control_dir)
        if masters is None:
            return
        with _MASTERS_LOCK:
            lock = masters.setdefault(address, threading.Lock())
        with lock:
            if (self.control_dir, address) in _TRIED:
                return
            _TRIED.add((self.control_dir, address))
            extra = ["-M", "-N", "-f", *self._control(address), "-o", f"ControlPersist={self.CONTROL_PERSIST_S}"]
            with contextlib.suppress(subprocess.TimeoutExpired):  # its commands then connect on their own
                subprocess.run(
                    self._argv(address, extra, []),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    timeout=self.connect_timeout + 30,
                    check=False,
                )

    def run(
        self, address: str, command: str, timeout: float = 120, check: bool = True, cancellable: bool = True
    ) -> subprocess.CompletedProcess:
        """One command; bounded by `timeout`, and (if `cancellable`) ended within a second when the
        operation is cancelled. Clean-up after a cancel runs with cancellable=False."""
        cancelled = runtime.cancelled if cancellable else threading.Event()
        self._master(address)
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


_MASTERS: dict[str, dict[str, threading.Lock]] = {}  # control_dir -> address -> its master's lock
_TRIED: set[tuple[str, str]] = set()  # (control_dir, address): a master was tried, whatever came of it
_MASTERS_LOCK = threading.Lock()


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


def end_masters() -> None:
    """End every master connection this process opened (its engine is gone: nothing ends the blocks)."""
    for directory, masters in list(_MASTERS.items()):
        for address in list(masters):
            if Path(directory, address).exists():
                subprocess.run(
                    ["ssh", "-o", f"ControlPath={Path(directory, address)}", "-O", "exit", address],
                    capture_output=True,
                    timeout=30,
                    check=False,
                )
