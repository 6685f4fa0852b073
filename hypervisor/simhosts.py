"""Simulated libvirt hosts on this one machine: `./labctl hosts up N` / `./labctl hosts down`.

Host 1 is the lab's own (setup's libvirtd, in namespace l2dsr, where pulumi runs). Each further host
k is what a remote hypervisor is to the lab: its own network namespace (l2dsr-hk), its own libvirtd
and virtlogd with private state (/etc/libvirt, /run/libvirt, /var/lib/libvirt, /var/log/libvirt and
/var/cache/libvirt bind-mounted from /var/lib/l2dsr/hosts/hk in a mount namespace of its own, as the
lab's own libvirtd has), and an
sshd there that is the only way in: the lab reaches it as qemu+ssh://root@10.254.0.k/system and runs
its host-side steps over the same SSH. The hosts are joined by an underlay and nothing else: a veth
from each host's namespace to a bridge in host 1's. Killing one host's daemons leaves the others be.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hypervisor import cleanup, libvirt
from hypervisor.progress import StepFailed, say
from runtime.hostfacts import RUN_DIR, atomic_write, cache_dir, read_json
from virt import ownership
from virt.virsh import Virsh

UNDERLAY = ipaddress.IPv4Network("10.254.0.0/24")
UNDERLAY_BRIDGE = "l2dsr-ul"
STATE = Path("/var/lib/l2dsr/hosts")
RECORD = RUN_DIR / "hosts.json"
PACKAGES = ("openssh-server", "netcat-openbsd")  # the hosts' sshd; nc: libvirt's SSH transport falls back on it


@dataclass
class SimHost:
    name: str  # h2, h3, ...
    namespace: str
    address: str  # on the underlay
    directory: str
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        return f"qemu+ssh://root@{self.address}/system?keyfile={key_file()}&no_verify=1&no_tty=1"


def key_file() -> Path:
    """The key the lab logs in to the simulated hosts with (made once; kept with the other built things)."""
    return cache_dir() / "hosts" / "id_ed25519"


def address_of(index: int) -> str:
    return str(UNDERLAY.network_address + index)  # host 1: .1, host k: .k


def read() -> list[SimHost]:
    if not RECORD.exists():
        return []
    found = read_json(RECORD, "the simulated hosts", f"stop them by hand (ip netns list: l2dsr-h*), remove {RECORD}")
    return [SimHost(**h) for h in found]


def write(hosts: list[SimHost]) -> None:
    atomic_write(RECORD, json.dumps([asdict(h) for h in hosts], indent=1), mode=0o644)


def _virsh(host: SimHost, *args: str) -> subprocess.CompletedProcess[str]:
    """virsh against a simulated host, from host 1's namespace (the underlay exists only there)."""
    argv = [*libvirt.in_namespace(libvirt.read_record()), "virsh", "-q", "-c", host.uri, *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def _sh(*argv: str) -> None:
    done = subprocess.run(list(argv), capture_output=True, text=True)
    if done.returncode != 0:
        raise StepFailed(f"{' '.join(argv)}: {done.stderr.strip() or done.stdout.strip()}")


def _launcher(host: SimHost) -> str:
    """What runs inside the host's namespaces: private libvirt directories, then its three daemons."""
    d = host.directory
    return libvirt.private_libvirt_launcher(d, resolv=f"{d}/resolv.conf", sshd_config=f"{d}/sshd_config")


def _sshd_config(host: SimHost) -> str:
    d = host.directory
    return f"""ListenAddress {host.address}
HostKey {d}/ssh_host_ed25519_key
PidFile {d}/sshd.pid
AuthorizedKeysFile {d}/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
MaxStartups 100
MaxSessions 100
"""


def _ensure_underlay(rec: libvirt.HostRecord) -> None:
    ns = rec.namespace
    if subprocess.run(["ip", "-n", ns, "link", "show", UNDERLAY_BRIDGE], capture_output=True).returncode == 0:
        return
    _sh("ip", "-n", ns, "link", "add", UNDERLAY_BRIDGE, "type", "bridge")
    _sh("ip", "-n", ns, "addr", "add", f"{address_of(1)}/{UNDERLAY.prefixlen}", "dev", UNDERLAY_BRIDGE)
    _sh("ip", "-n", ns, "link", "set", UNDERLAY_BRIDGE, "up")


def _start(index: int, rec: libvirt.HostRecord) -> SimHost:
    name = f"h{index}"
    host = SimHost(name, f"l2dsr-{name}", address_of(index), str(STATE / name))
    d = Path(host.directory)
    # libvirt's configuration as the sandbox's (its private qemu.conf), none of host 1's networks, pools or domains
    libvirt.prepare_private_dirs(d)
    host_key = cache_dir() / "hosts" / f"{name}_host_ed25519_key"  # kept: the host's identity stays the same
    if not host_key.exists():
        _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"l2dsr simulated host {name}", "-f", str(host_key))
    shutil.copy2(host_key, d / "ssh_host_ed25519_key")
    (d / "ssh_host_ed25519_key").chmod(0o600)
    shutil.copy2(f"{key_file()}.pub", d / "authorized_keys")
    (d / "sshd_config").write_text(_sshd_config(host))
    subprocess.run(["ip", "netns", "delete", host.namespace], capture_output=True)
    _sh("ip", "netns", "add", host.namespace)
    ns = host.namespace
    _sh("ip", "-n", ns, "link", "set", "lo", "up")
    _sh("ip", "-n", rec.namespace, "link", "add", f"ul-{name}", "type", "veth", "peer", "name", "ul0", "netns", ns)
    _sh("ip", "-n", rec.namespace, "link", "set", f"ul-{name}", "master", UNDERLAY_BRIDGE, "up")
    _sh("ip", "-n", ns, "addr", "add", f"{host.address}/{UNDERLAY.prefixlen}", "dev", "ul0")
    _sh("ip", "-n", ns, "link", "set", "ul0", "up")
    _sh("ip", "netns", "exec", ns, "unshare", "--mount", "--propagation", "private", "sh", "-c", _launcher(host))
    host.pids = libvirt.wait_for_pid_files(d, ("virtlogd", "libvirtd", "sshd"), f"simulated host {name}")
    deadline = time.monotonic() + 30
    while _virsh(host, "version").returncode != 0:
        if time.monotonic() > deadline:
            raise StepFailed(f"simulated host {name}: libvirt over SSH ({host.uri}) did not answer within 30 s")
        time.sleep(0.5)
    if _virsh(host, "pool-info", libvirt.POOL_NAME).returncode != 0:  # kept in its private /etc/libvirt across restarts
        _virsh(host, "pool-define-as", libvirt.POOL_NAME, "dir", "--target", libvirt.POOL_PATH)
    _virsh(host, "pool-start", libvirt.POOL_NAME)  # fails when it runs already
    if "running" not in _virsh(host, "pool-info", libvirt.POOL_NAME).stdout:
        raise StepFailed(f"simulated host {name}: storage pool {libvirt.POOL_NAME} does not start")
    return host


def inventory(hosts: list[SimHost]) -> list[dict[str, str]]:
    """l2dsr:hosts for host 1 (the lab's libvirtd, where pulumi runs) and the simulated ones."""
    first = {"name": "h1", "uri": libvirt.URI, "address": address_of(1)}
    rest = [
        {"name": h.name, "uri": h.uri, "address": h.address, "user": "root", "identityFile": str(key_file())}
        for h in sorted(hosts, key=lambda h: int(h.name[1:]))
    ]
    return [first, *rest]


def up(count: int, log: Path) -> list[SimHost]:
    """Hosts 2..count (host 1 is setup's), idempotent: running ones stay."""
    rec = libvirt.read_record()
    if not (rec and rec.namespace and libvirt.ours_running(rec)):
        raise StepFailed("simulated hosts join the lab's own libvirtd in its namespace: run ./labctl setup first")
    if not 2 <= count <= 8:
        raise StepFailed(f"{count} hosts: simulate 2 to 8 (host 1 is this machine's lab libvirtd)")
    libvirt.install_packages(PACKAGES, log, tools_only=True)  # the binaries only: no sshd of the machine's own
    key = key_file()
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True)
        _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "l2dsr simulated hosts", "-f", str(key))
    _ensure_underlay(rec)
    hosts = {h.name: h for h in read()}
    for index in range(2, count + 1):
        name = f"h{index}"
        running = hosts.get(name)
        if running and running.pids and all(libvirt.alive(p) for p in running.pids.values()):
            continue
        if running:
            _stop(running)
        say(f"simulated host {name}: namespace l2dsr-{name}, libvirtd, sshd at {address_of(index)}")
        hosts[name] = _start(index, rec)
        write(list(hosts.values()))
    say("their l2dsr:hosts (as in Pulumi.twohost.yaml):")
    for entry in inventory(list(hosts.values())):
        say("  - " + json.dumps(entry))
    return list(hosts.values())


def _stop(host: SimHost) -> None:
    for daemon in ("sshd", "libvirtd", "virtlogd"):
        if host.pids.get(daemon):
            libvirt.stop(host.pids[daemon])
    # What else runs in the host's namespace is its own too: sshd's sessions outlive their listener
    # (a multiplexed client keeps one open), and would outlive the namespace.
    left = subprocess.run(["ip", "netns", "pids", host.namespace], capture_output=True, text=True).stdout.split()
    for pid in left:
        libvirt.stop(int(pid))
    subprocess.run(["ip", "netns", "delete", host.namespace], capture_output=True)


def down(force: bool = False, states: tuple[str, ...] = ()) -> None:
    """Stop every simulated host. Refused while one still has domains of `states` (this checkout's
    state, or the test run's), unless forced: then those go too. A host that holds objects without
    the lab's marker, or of another state, is listed and left running (its private state with it)."""
    hosts = read()
    kept = []
    for host in hosts:
        if host.pids and all(libvirt.alive(p) for p in host.pids.values()):
            virsh = Virsh(host.uri, prefix=tuple(libvirt.in_namespace(libvirt.read_record())))
            objects = cleanup.host_objects(virsh)
            mine = ownership.sort_for_cleanup(objects.domains, ownership.of_state(*states)).remove
            if mine and not force:
                raise StepFailed(
                    f"simulated host {host.name} still has domains: {' '.join(mine)}; destroy the stack first "
                    "(./labctl destroy STACK), or ./labctl hosts down --force"
                )
            if force:
                left = cleanup.remove_ours(virsh, ownership.of_state(*states), f"simulated host {host.name}")
            else:
                others = ownership.sort_for_cleanup(objects.networks, ownership.of_state(*states)).left
                left = [f"domain {d}" for d in objects.domains if d not in mine] + [f"network {n}" for n in others]
            if left:
                say(
                    f"simulated host {host.name}: left running, it holds what is not this checkout's: {'; '.join(left)}"
                )
                kept.append(host)
                continue
        _stop(host)
        shutil.rmtree(host.directory, ignore_errors=True)  # its private libvirt state: the host is gone
        say(f"simulated host {host.name}: stopped, namespace {host.namespace} and {host.directory} deleted")
    if kept:
        write(kept)
        return
    rec = libvirt.read_record()
    if rec and rec.namespace:
        subprocess.run(["ip", "-n", rec.namespace, "link", "del", UNDERLAY_BRIDGE], capture_output=True)
    RECORD.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        STATE.rmdir()
