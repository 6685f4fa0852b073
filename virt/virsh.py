"""The libvirt operations the lab's resources need, through `virsh` (no libvirt headers to build)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass


class VirshError(RuntimeError):
    pass


@dataclass(frozen=True)
class Virsh:
    uri: str

    def run(self, *args: str, check: bool = True, timeout: float = 300) -> str:
        argv = ["virsh", "-q", "-c", self.uri, *args]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except FileNotFoundError as e:
            raise VirshError("virsh not found: run ./labctl setup (it installs libvirt-clients)") from e
        if check and done.returncode != 0:
            raise VirshError(f"virsh {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

    def ok(self, *args: str, timeout: float = 30) -> bool:
        """Did the command succeed? A missing virsh or a libvirtd that does not answer in time: no."""
        try:
            argv = ["virsh", "-q", "-c", self.uri, *args]
            return subprocess.run(argv, capture_output=True, timeout=timeout).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def with_xml(self, verb: str, xml: str, *args: str) -> str:
        with tempfile.NamedTemporaryFile("w", suffix=".xml") as f:
            f.write(xml)
            f.flush()
            return self.run(verb, *args, f.name)

    # ---- networks ----
    def network_ensure(self, name: str, xml: str) -> None:
        if not self.ok("net-info", name):
            self.with_xml("net-define", xml)
        if "yes" not in self.run("net-info", name).split("Active:")[1].split("\n")[0]:
            self.run("net-start", name)

    def network_delete(self, name: str) -> None:
        if self.ok("net-info", name):
            self.run("net-destroy", name, check=False)
            self.run("net-undefine", name)

    def networks_xml(self) -> dict[str, str]:
        names = [n for n in self.run("net-list", "--all", "--name").split() if n]
        return {n: self.run("net-dumpxml", n) for n in names}

    # ---- volumes ----
    def volume_exists(self, pool: str, name: str) -> bool:
        return self.ok("vol-info", "--pool", pool, name)

    def volume_create(self, pool: str, xml: str) -> None:
        self.with_xml("vol-create", xml, "--pool", pool)

    def volume_upload(self, pool: str, name: str, source: str) -> None:
        self.run("vol-upload", "--pool", pool, name, source, timeout=1800)

    def volume_path(self, pool: str, name: str) -> str:
        return self.run("vol-path", "--pool", pool, name).strip()

    def volume_delete(self, pool: str, name: str) -> None:
        if self.volume_exists(pool, name):
            self.run("vol-delete", "--pool", pool, name)

    # ---- domains ----
    def domain_exists(self, name: str) -> bool:
        return self.ok("dominfo", name)

    def domain_create(self, xml: str, name: str) -> None:
        self.with_xml("define", xml)
        try:
            self.run("start", name)
        except VirshError:
            self.run("undefine", name, check=False)  # nothing half-built stays behind
            raise

    def domain_delete(self, name: str) -> None:
        if self.domain_exists(name):
            self.run("destroy", name, check=False)
            self.run("undefine", name)


def size_of(path: str) -> int:
    return os.stat(path).st_size
