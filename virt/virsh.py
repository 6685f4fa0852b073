"""The libvirt operations the lab's resources need, through `virsh` (no libvirt headers to build).

Existence has three answers: present, absent, and unknown (libvirt did not answer, or answered
something else). It is read from listings (`list --all --name`, ...), which either answer or fail:
virsh's "failed to get domain 'x'" alone cannot tell a missing domain from a failed lookup. Unknown
is an error (`LibvirtUnknown`), never "absent": a delete that cannot see the object must fail, not
drop a live VM from the state.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass


class VirshError(RuntimeError):
    pass


class LibvirtUnknown(VirshError):
    """libvirt did not say whether an object exists."""


@dataclass(frozen=True)
class Virsh:
    uri: str
    prefix: tuple[str, ...] = ()  # what runs it where the libvirtd is (hypervisor/libvirt.py in_namespace)

    def _exec(self, args: tuple[str, ...], timeout: float) -> subprocess.CompletedProcess[str]:
        argv = [*self.prefix, "virsh", "-q", "-c", self.uri, *args]
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except FileNotFoundError as e:
            raise VirshError("virsh not found: run ./labctl setup (it installs libvirt-clients)") from e
        except subprocess.TimeoutExpired as e:
            raise LibvirtUnknown(
                f"virsh {' '.join(args)}: libvirt at {self.uri} did not answer within {timeout:.0f} s"
            ) from e

    def run(self, *args: str, check: bool = True, timeout: float = 300) -> str:
        done = self._exec(args, timeout)
        if check and done.returncode != 0:
            raise VirshError(f"virsh {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

    def ok(self, *args: str, timeout: float = 30) -> bool:
        """Did the command succeed? For host set-up's own checks (is libvirtd up, is the pool there);
        not for whether a lab object exists: that is `domain`, `network`, `volume_exists`."""
        try:
            return self._exec(args, timeout).returncode == 0
        except VirshError:
            return False

    def ask(self, *args: str, timeout: float = 60) -> str:
        """A query's output; LibvirtUnknown when libvirt does not give one."""
        done = self._exec(args, timeout)
        if done.returncode != 0:
            said = (done.stderr.strip() or done.stdout.strip()).replace("\n", " ")
            raise LibvirtUnknown(f"virsh {' '.join(args)}: {said or f'exit {done.returncode}'}")
        return done.stdout

    def names(self, *listing: str) -> list[str]:
        """The first column of a listing (`list --all --name`, `vol-list --pool p`)."""
        return [line.split()[0] for line in self.ask(*listing).splitlines() if line.strip()]

    def node_facts(self, timeout: float = 15) -> tuple[int, int]:
        """(CPUs, memory in MiB) of the libvirt host; VirshError when libvirt does not say."""
        info = self.ask("nodeinfo", timeout=timeout)
        # nodeinfo's "Memory size" is NUMA node memory: 12.5 of 24 GiB on these machines; nodememstats
        # has the host's MemTotal. Drivers without memory stats (libvirt's test driver) have only the former.
        try:
            mem = self.ask("nodememstats", timeout=timeout)
        except LibvirtUnknown:
            mem = re.sub(r"^Memory size:", "total :", info, flags=re.M)
        cpus = re.search(r"^CPU\(s\):\s+(\d+)", info, re.M)
        total = re.search(r"^total\s*:\s+(\d+) KiB", mem, re.M)
        if not (cpus and total):
            raise VirshError(f"libvirt at {self.uri} did not say its CPUs and memory")
        return int(cpus.group(1)), int(total.group(1)) // 1024

    def nodeinfo(self) -> tuple[int, int] | None:
        """(CPUs, memory in MiB) of the libvirt host, or None when libvirt does not say."""
        try:
            return self.node_facts()
        except VirshError:
            return None

    def with_xml(self, verb: str, xml: str, *args: str) -> str:
        with tempfile.NamedTemporaryFile("w", suffix=".xml") as f:
            f.write(xml)
            f.flush()
            return self.run(verb, *args, f.name)

    # ---- domains and networks: (uuid, running) or None ----
    def domain(self, name: str) -> tuple[str, bool] | None:
        if name not in self.names("list", "--all", "--name"):
            return None
        state = self.ask("domstate", name).strip()
        # paused is not running: a fault run killed before it resumed its web leaves it so (drift)
        return self.ask("domuuid", name).strip(), state in ("running", "in shutdown")

    def network(self, name: str) -> tuple[str, bool] | None:
        if name not in self.names("net-list", "--all", "--name"):
            return None
        active = re.search(r"^Active:\s+(\w+)", self.ask("net-info", name), re.M)
        return self.ask("net-uuid", name).strip(), bool(active and active.group(1) == "yes")

    def networks_xml(self) -> dict[str, str]:
        names = [n for n in self.run("net-list", "--all", "--name").split() if n]
        return {n: self.run("net-dumpxml", n) for n in names}

    def domain_define_start(self, xml: str, name: str) -> None:
        self.with_xml("define", xml)
        try:
            self.run("start", name)
        except VirshError:
            self.run("undefine", name, check=False)  # nothing half-built stays behind
            raise

    def domain_remove(self, name: str) -> None:
        self.run("destroy", name, check=False)  # fails when it is not running: fine
        self.run("undefine", name)

    def network_define_start(self, xml: str, name: str) -> None:
        self.with_xml("net-define", xml)
        try:
            self.run("net-start", name)
        except VirshError:
            self.run("net-undefine", name, check=False)
            raise

    def network_remove(self, name: str) -> None:
        self.run("net-destroy", name, check=False)
        self.run("net-undefine", name)

    # ---- volumes ----
    def volume_exists(self, pool: str, name: str) -> bool:
        return name in self.names("vol-list", "--pool", pool)

    def volume_create(self, pool: str, xml: str) -> None:
        self.with_xml("vol-create", xml, "--pool", pool)

    def volume_upload(self, pool: str, name: str, source: str) -> None:
        self.run("vol-upload", "--pool", pool, name, source, timeout=1800)

    def volume_capacity(self, path: str) -> int:
        """A volume's virtual size in bytes, by its path on the libvirt host."""
        out = self.run("vol-info", "--bytes", path, timeout=60)
        found = re.search(r"^Capacity:\s+(\d+) bytes", out, re.M)
        if not found:
            raise VirshError(f"virsh vol-info {path}: no capacity in {out!r}")
        return int(found.group(1))

    def volume_path(self, pool: str, name: str) -> str:
        return self.run("vol-path", "--pool", pool, name).strip()

    def volume_delete(self, pool: str, name: str) -> None:
        if self.volume_exists(pool, name):
            self.run("vol-delete", "--pool", pool, name)


def size_of(path: str) -> int:
    return os.stat(path).st_size
