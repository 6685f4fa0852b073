"""The libvirt host: a system libvirtd where one runs, otherwise our own inside a network namespace.

Sandbox mode (these machines: no systemd, and every private address of the lab must live in a
namespace we create): `ip netns add l2dsr`, virtlogd and libvirtd started inside it, so the lab's
bridge, its addresses and anything libvirt adds to the firewall exist only there. The daemons have a
mount namespace of their own too, with libvirt's directories (config, state, run, log, cache) private
in /var/lib/l2dsr/sandbox: they never see the host's domains and networks, and the QEMU settings the
sandbox needs go into its private qemu.conf, never the host's. What setup started is written to
/run/l2dsr/host.json; teardown stops exactly that and removes only objects that carry the lab's
marker (virt/ownership.py), and `./labctl down` leaves no lab file under /etc.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

from hypervisor.progress import StepFailed, run_logged, say
from runtime.hostfacts import (
    DOMAIN_TYPES,
    RUN_DIR,
    HostRecord,
    atomic_write,
    read_record,
    write_record,
)
from virt.virsh import Virsh

NAMESPACE = "l2dsr"
URI = "qemu:///system"
POOL_NAME = "default"
POOL_PATH = "/var/lib/libvirt/images"
QEMU_CONF_BLOCK = """
# l2dsr sandbox (no systemd, no AppArmor/SELinux here): qemu runs as root, no relabelling.
user = "root"
group = "root"
security_driver = "none"
dynamic_ownership = 0
# end l2dsr
"""
HOST_PACKAGES = [
    "libvirt-daemon-system",
    "libvirt-clients",
    "libvirt-daemon-driver-qemu",
    "qemu-system-x86",
    "qemu-utils",
    "debootstrap",
    "genisoimage",
    "dnsmasq-base",
    "iptables",
    "nftables",
    "openssh-client",
    "e2fsprogs",
    "iproute2",
    "tcpdump",  # ./labctl capture, on the host side of a VM's NIC
    "graphviz",  # ./labctl graph and the report's picture of the lab
]
TEST_PACKAGES = ("cloud-init", "haproxy", "keepalived", "nginx-light")  # the tools that check rendered files


# ---- decisions (pure) --------------------------------------------------------------------------


def choose_libvirtd(system_libvirtd_answers: bool, ours_running: bool) -> str:
    """A libvirtd that answers and is not ours is the user's system service: use it."""
    return "system" if system_libvirtd_answers and not ours_running else "sandbox"


def choose_domain_type(configured: str, kvm_runs_guests: bool | None) -> str:
    if configured in DOMAIN_TYPES:
        return configured
    if kvm_runs_guests is None:
        raise ValueError("domainType auto needs the KVM probe result")
    return "kvm" if kvm_runs_guests else "qemu"


def kvm_probe(kernel: Path, accel: str = "kvm", timeout: float = 20.0) -> bool:
    """Does a real kernel run under `accel`? Boot it until it prints its banner on the serial port.

    /dev/kvm existing proves nothing here: its kernel runs real-mode code (a boot sector works) but
    only PVM guests past that, so a normal kernel hangs in its decompressor. Seconds on real KVM.
    """
    if accel == "kvm" and not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    argv = [
        # niced: a kernel that hangs under a PVM-only KVM spins its vCPU until the timeout, and the
        # probe runs beside the engine's Go build (the set-up's critical path)
        "nice",
        "-n",
        "10",
        "qemu-system-x86_64",
        "-accel",
        accel,
        "-machine",
        "pc",
        "-m",
        "128",
        "-nodefaults",
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        "stdio",
        "-no-reboot",
        "-kernel",
        str(kernel),
        "-append",
        "console=ttyS0 panic=-1",
    ]
    if not shutil.which("qemu-system-x86_64"):
        raise StepFailed("qemu-system-x86_64 not found: run ./labctl setup")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    found = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if b"Linux version" in line:
                found.set()
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    found.wait(timeout)
    proc.kill()
    proc.wait()
    return found.is_set()


def kvm_runs_guests(kernel: Path) -> bool:
    """The probe's answer, cached per boot (the host kernel and /dev/kvm do not change within one)."""
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    cache = RUN_DIR / f"kvm-probe-{boot_id}.json"
    if cache.exists():
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):  # a cut-short answer: ask again
            return bool(json.loads(cache.read_text())["kvm"])
    result = kvm_probe(kernel)
    atomic_write(cache, json.dumps({"kvm": result}), mode=0o644)
    return result


# ---- state -------------------------------------------------------------------------------------


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def stop(pid: int) -> bool:
    """SIGTERM to a daemon we started (by its PID), then up to 5 s for it to end; False if it was not running."""
    if not alive(pid):
        return False
    os.kill(pid, signal.SIGTERM)
    for _ in range(50):
        if not alive(pid):
            break
        time.sleep(0.1)
    return True


def ours_running(rec: HostRecord | None) -> bool:
    return bool(rec and rec.libvirtd == "sandbox" and rec.pids and all(alive(p) for p in rec.pids.values()))


def in_namespace(rec: HostRecord | None) -> list[str]:
    """The prefix that runs a command where the lab is: its network namespace (the lab's addresses) and,
    for our own libvirtd, that daemon's mount namespace (its private libvirt directories and socket).
    Empty for a system libvirtd."""
    if not (rec and rec.namespace):
        return []
    libvirtd = rec.pids.get("libvirtd")
    if rec.directory and libvirtd and alive(libvirtd):
        return ["nsenter", f"--net=/run/netns/{rec.namespace}", f"--mount=/proc/{libvirtd}/ns/mnt", "--wd=.", "--"]
    return ["ip", "netns", "exec", rec.namespace]


def virsh_of(rec: HostRecord | None) -> Virsh:
    """The lab's libvirt, reached from anywhere (for the sandbox: inside its namespaces)."""
    return Virsh(URI, prefix=tuple(in_namespace(rec)))


# ---- setup and teardown ------------------------------------------------------------------------


def install_packages(packages: tuple[str, ...] | list[str], log: Path, tools_only: bool = False) -> None:
    """apt-get install what is missing. `tools_only`: packages wanted for their commands alone (the
    checkers of rendered files): no service of theirs starts, and a cloud-init installed here is
    disabled on this host, so it never runs at the host's boot."""
    missing = [p for p in packages if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode != 0]
    if not missing:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not list(Path("/var/lib/apt/lists").glob("*Packages*")):
        run_logged("apt-get update", ["apt-get", "update"], log, env=env)
    policy = Path("/usr/sbin/policy-rc.d")
    ours = tools_only and not policy.exists()
    if ours:
        policy.write_text("#!/bin/sh\n# l2dsr: installing checker tools; start no service\nexit 101\n")
        policy.chmod(0o755)
    try:
        run_logged(
            f"install {len(missing)} Debian packages",
            ["apt-get", "install", "-y", "--no-install-recommends", *missing],
            log,
            env=env,
        )
    finally:
        if ours:
            policy.unlink()
    if tools_only and "cloud-init" in missing:
        Path("/etc/cloud/cloud-init.disabled").touch()


def setup(probe_kernel: Path) -> HostRecord:
    """Idempotent: a ready libvirt host, with a storage pool and the domain type decided.

    HOST_PACKAGES must be installed already (./labctl's setup does it first: the image needs them too).
    """
    rec = read_record()
    if choose_libvirtd(Virsh(URI).ok("version"), ours_running(rec)) == "system":
        say("libvirt: using the running system libvirtd")
        rec = rec if rec and rec.libvirtd == "system" else HostRecord(libvirtd="system")
    elif rec is not None and ours_running(rec):
        say(f"libvirt: our libvirtd is running in namespace {rec.namespace}")
    else:
        rec = _start_sandbox()
    virsh = virsh_of(rec)
    if not virsh.ok("pool-info", POOL_NAME):
        if rec.libvirtd == "system":
            Path(POOL_PATH).mkdir(parents=True, exist_ok=True)  # the sandbox's is made in its own directories
        for args in (
            ("pool-define-as", POOL_NAME, "dir", "--target", POOL_PATH),
            ("pool-start", POOL_NAME),
            ("pool-autostart", POOL_NAME),
        ):
            if not virsh.ok(*args):
                raise StepFailed(f"virsh {' '.join(args)} failed")
        rec.created_pool = True
    elif not virsh.ok("pool-start", POOL_NAME) and "running" not in virsh.run("pool-info", POOL_NAME, check=False):
        raise StepFailed(f"storage pool {POOL_NAME} exists but does not start")
    rec.domain_type = choose_domain_type("auto", kvm_runs_guests(probe_kernel))
    say(
        f"libvirt: guests run as type {rec.domain_type} ({'KVM runs guests' if rec.domain_type == 'kvm' else 'KVM cannot run a guest here: software emulation'})"
    )
    write_record(rec)
    return rec


SANDBOX_DIR = Path("/var/lib/l2dsr/sandbox")
# libvirt's own directories, each bind-mounted from SANDBOX_DIR/<key> in the daemons' mount namespace:
# the sandbox never sees the host's domains, networks and pools, and never edits the host's files.
PRIVATE_DIRS = {
    "etc": "/etc/libvirt",
    "run": "/run/libvirt",
    "lib": "/var/lib/libvirt",
    "log": "/var/log/libvirt",
    "cache": "/var/cache/libvirt",
}


def private_libvirt_launcher(directory: str, *, resolv: str = "", sshd_config: str = "") -> str:
    """The shell that runs in a fresh mount namespace (and the lab's network namespace): libvirt's
    directories bind-mounted from `directory`, an empty resolver over /etc/resolv.conf (nothing waits
    on DNS towards the outside; no /etc/netns file on the host), then virtlogd, libvirtd and, for a
    simulated host, its sshd, each writing its PID file into `directory`."""
    d = directory
    mounts = "\n".join(f"mount --bind {d}/{k} {path}" for k, path in PRIVATE_DIRS.items())
    resolver = f"if [ -f /etc/resolv.conf ]; then mount --bind {resolv} /etc/resolv.conf; fi" if resolv else ""
    sshd = f"/usr/sbin/sshd -f {sshd_config}" if sshd_config else ""
    return f"""set -e
{mounts}
{resolver}
mkdir -p /var/lib/libvirt/images /var/lib/libvirt/dnsmasq /var/log/libvirt/qemu /var/cache/libvirt/qemu /run/sshd
virtlogd --daemon --pid-file {d}/virtlogd.pid
libvirtd --daemon --pid-file {d}/libvirtd.pid
{sshd}
"""


def prepare_private_dirs(directory: Path, qemu_conf_block: str = QEMU_CONF_BLOCK) -> None:
    """`directory`'s libvirt directories, with the host's libvirt settings (its *.conf files, none of its
    definitions) and the sandbox's QEMU settings appended to the private qemu.conf only."""
    for k in PRIVATE_DIRS:
        (directory / k).mkdir(parents=True, exist_ok=True)
    etc = directory / "etc"
    for conf in Path("/etc/libvirt").glob("*.conf"):
        if not (etc / conf.name).exists():
            shutil.copy2(conf, etc / conf.name)
    qemu_conf = etc / "qemu.conf"
    text = qemu_conf.read_text() if qemu_conf.exists() else ""
    if "# l2dsr sandbox" not in text:
        qemu_conf.write_text(text + qemu_conf_block)
    (directory / "resolv.conf").write_text("")


def wait_for_pid_files(directory: Path, daemons: tuple[str, ...], what: str) -> dict[str, int]:
    pids = {}
    for daemon in daemons:
        pidfile = directory / f"{daemon}.pid"
        for _ in range(100):
            if pidfile.exists() and pidfile.read_text().strip():
                break
            time.sleep(0.1)
        else:
            raise StepFailed(f"{what}: {daemon} did not start (no PID in {pidfile})")
        pids[daemon] = int(pidfile.read_text().strip())
    return pids


def _start_sandbox() -> HostRecord:
    say(f"libvirt: starting a private libvirtd in network namespace {NAMESPACE} (its state in {SANDBOX_DIR})")
    created = [p for p in PRIVATE_DIRS.values() if not Path(p).exists()]
    for mount_point in PRIVATE_DIRS.values():  # the bind mounts' targets (the package makes most of them)
        Path(mount_point).mkdir(parents=True, exist_ok=True)
    prior = read_record()
    rec = HostRecord(
        libvirtd="sandbox",
        namespace=NAMESPACE,
        directory=str(SANDBOX_DIR),
        created_dirs=sorted({*(prior.created_dirs if prior else []), *created}),
    )
    write_record(rec)  # from here on, teardown knows about the namespace
    return start_private_libvirtd(rec, on_started=write_record)


def start_private_libvirtd(rec: HostRecord, on_started=lambda rec: None) -> HostRecord:
    """virtlogd and libvirtd in network namespace `rec.namespace` (made here if missing) and a mount
    namespace of their own over `rec.directory`'s private libvirt directories; `on_started` gets the
    record with their PIDs as soon as they are known."""
    directory = Path(rec.directory)
    if subprocess.run(["ip", "netns", "pids", rec.namespace], capture_output=True).returncode != 0:
        subprocess.run(["ip", "netns", "add", rec.namespace], check=True)
    subprocess.run(["ip", "-n", rec.namespace, "link", "set", "lo", "up"], check=True)
    prepare_private_dirs(directory)
    for daemon in ("virtlogd", "libvirtd"):
        (directory / f"{daemon}.pid").unlink(missing_ok=True)
    launcher = private_libvirt_launcher(str(directory), resolv=str(directory / "resolv.conf"))
    # slave: the host's later mounts (a simulated host's namespace) are seen inside; ours stay inside
    done = subprocess.run(
        ["ip", "netns", "exec", rec.namespace, "unshare", "--mount", "--propagation", "slave", "sh", "-c", launcher],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise StepFailed(f"the private libvirtd did not start: {(done.stderr or done.stdout).strip()[-600:]}")
    rec.pids = wait_for_pid_files(directory, ("virtlogd", "libvirtd"), "the private libvirtd")
    on_started(rec)
    virsh = virsh_of(rec)
    deadline = time.monotonic() + 30
    while not virsh.ok("version"):
        if time.monotonic() > deadline:
            raise StepFailed(
                f"libvirtd did not answer within 30 s (its log: {directory}/log; try ./labctl sh virsh version)"
            )
        time.sleep(0.3)
    return rec
