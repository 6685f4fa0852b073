"""Commands on a libvirt host of the lab: here when it is this machine, over SSH when it is another.

The lab's host-side steps (the VXLAN tunnel, reading a guest's console log) and SSH to a remote
host's guests (as a jump: ssh -W through the host) go through here. Connections to a host are
multiplexed (one SSH master per host, ended by itself 30 s after its last use).
"""

from __future__ import annotations

import os
import shlex
import subprocess
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from lab.spec import HostSpec, Problem
from runtime.hostfacts import assert_in_lab_namespace, cache_dir


class HostError(RuntimeError):
    """A command on a libvirt host that failed or did not finish: the host, the command, its output."""


@dataclass(frozen=True)
class HostRef:
    name: str = "local"
    address: str = ""  # empty: this machine
    user: str = ""
    identity_file: str = ""
    # A real server's key is checked: learnt at the first connection into the lab's own known_hosts,
    # refused if it changes. Off only where the host's URI turns libvirt's own check off (no_verify=1,
    # as the simulated hosts, whose keys are made on this machine).
    verify_key: bool = True

    @property
    def remote(self) -> bool:
        return bool(self.address)

    def where(self) -> str:
        return f"host {self.name}" + (f" ({self.user}@{self.address})" if self.remote else "")

    def ssh_options(self) -> list[str]:
        opts = [
            "-o", "BatchMode=yes",
            *self.host_key_options(),
            "-o", "LogLevel=ERROR",
            "-o", "ConnectTimeout=15",
            "-o", "ServerAliveInterval=15",
            "-o", "ControlMaster=auto",
            "-o", "ControlPath=/tmp/l2dsr-ssh-%C",
            "-o", "ControlPersist=30",
        ]  # fmt: skip
        if self.identity_file:
            opts += ["-i", self.identity_file, "-o", "IdentitiesOnly=yes"]
        return opts

    def host_key_options(self) -> list[str]:
        if not self.verify_key:
            return ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
        return ["-o", "StrictHostKeyChecking=accept-new", "-o", f"UserKnownHostsFile={known_hosts()}"]

    def argv(self, command: str) -> list[str]:
        if not self.remote:
            return ["sh", "-c", command]
        assert_in_lab_namespace()
        return ["ssh", *self.ssh_options(), f"{self.user}@{self.address}", command]

    def proxy_command(self) -> str:
        """OpenSSH's ProxyCommand that reaches a guest through this host (what ProxyJump does, with our options)."""
        # The outer ssh expands %-tokens in it: %h:%p are the guest's; the host's own %C is escaped.
        options = [o.replace("%C", "%%C") for o in self.ssh_options()]
        return shlex.join(["ssh", *options, "-W", "%h:%p", f"{self.user}@{self.address}"])

    def run(self, command: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
        try:
            done = subprocess.run(self.argv(command), capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise HostError(f"{self.where()}: `{command}` did not finish within {timeout:.0f} s") from None
        if check and done.returncode != 0:
            said = (done.stderr or done.stdout).strip()[-600:]
            how = "SSH could not log in" if self.remote and done.returncode == 255 else f"it exited {done.returncode}"
            raise HostError(f"{self.where()}: `{command}`: {how}: {said or '(no output)'}")
        return done

    def read_from(self, path: str, offset: int) -> bytes | None:
        """A file's bytes from `offset` (None: no such file)."""
        if not self.remote:
            try:
                with open(path, "rb") as f:
                    f.seek(offset)
                    return f.read()
            except FileNotFoundError:
                return None
        done = subprocess.run(
            self.argv(f"test -e {shlex.quote(path)} || exit 3; tail -c +{offset + 1} {shlex.quote(path)}"),
            capture_output=True,
            timeout=60,
        )
        if done.returncode == 3:
            return None
        if done.returncode != 0:
            raise HostError(f"{self.where()}: cannot read {path}: {done.stderr.decode(errors='replace').strip()}")
        return done.stdout

    def size_of(self, path: str) -> int:
        if not self.remote:
            try:
                with open(path, "rb") as f:
                    return f.seek(0, 2)
            except FileNotFoundError:
                return 0
        out = self.run(f"stat -c %s {shlex.quote(path)} 2>/dev/null || echo 0").stdout.strip()
        return int(out or 0)


LOCAL = HostRef()


def access_problems(hosts: tuple[HostSpec, ...]) -> list[Problem]:
    """What the inventory names on this machine and cannot be used: an identityFile that is not a
    readable file (checked at preview, before anything runs)."""
    problems = []
    for h in hosts:
        if h.identity_file and not (os.path.isfile(h.identity_file) and os.access(h.identity_file, os.R_OK)):
            problems.append(
                Problem(
                    "hosts",
                    f"host {h.name!r}: identityFile {h.identity_file!r} is not a readable file; give the SSH private "
                    "key of its user (for the simulated hosts, ./labctl hosts up N makes it)",
                )
            )
    return problems


def ref_of(host: HostSpec) -> HostRef:
    """How the lab reaches a host of its inventory: here, or over SSH to its address."""
    if host.local:
        return HostRef(host.name)
    verify = dict(parse_qsl(urlsplit(host.uri).query)).get("no_verify", "0") != "1"
    return HostRef(host.name, host.address, host.user, host.identity_file, verify_key=verify)


def known_hosts() -> str:
    """The lab's own known_hosts for its real hosts (never the user's ~/.ssh/known_hosts)."""
    return str(cache_dir() / "known_hosts")
