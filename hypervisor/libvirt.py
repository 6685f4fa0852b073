"""The libvirt host: a system libvirtd where one runs, otherwise our own inside a network namespace.

Sandbox mode (these machines: no systemd, and every private address of the lab must live in a
namespace we create): `ip netns add l2dsr`, virtlogd and libvirtd started inside it, so the lab's
bridge, its addresses and anything libvirt adds to the firewall exist only there. What setup
started is written to /run/l2dsr/host.json, and teardown stops exactly that.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

from hypervisor.progress import StepFailed, run_logged, say
from runtime.hostfacts import DOMAIN_TYPES, RECORD, RUN_DIR, HostRecord, read_record, write_record
from virt.virsh import Virsh

NAMESPACE = "l2dsr"
URI = "qemu:///system"
VIRSH = Virsh(URI)
POOL_NAME = "default"
POOL_PATH = "/var/lib/libvirt/images"
QEMU_CONF = Path("/etc/libvirt/qemu.conf")
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
        return json.loads(cache.read_text())["kvm"]
    result = kvm_probe(kernel)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"kvm": result}))
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
    """The prefix that runs a command where the lab's addresses are (empty for a system libvirtd)."""
    return ["ip", "netns", "exec", rec.namespace] if rec and rec.namespace else []


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
    if choose_libvirtd(VIRSH.ok("version"), ours_running(rec)) == "system":
        say("libvirt: using the running system libvirtd")
        rec = rec if rec and rec.libvirtd == "system" else HostRecord(libvirtd="system")
    elif rec is not None and ours_running(rec):
        say(f"libvirt: our libvirtd is running in namespace {rec.namespace}")
    else:
        rec = _start_sandbox()
    if not VIRSH.ok("pool-info", POOL_NAME):
        Path(POOL_PATH).mkdir(parents=True, exist_ok=True)
        for args in (
            ("pool-define-as", POOL_NAME, "dir", "--target", POOL_PATH),
            ("pool-start", POOL_NAME),
            ("pool-autostart", POOL_NAME),
        ):
            if not VIRSH.ok(*args):
                raise StepFailed(f"virsh {' '.join(args)} failed")
        rec.created_pool = True
    elif not VIRSH.ok("pool-start", POOL_NAME) and "running" not in VIRSH.run("pool-info", POOL_NAME, check=False):
        raise StepFailed(f"storage pool {POOL_NAME} exists but does not start")
    rec.domain_type = choose_domain_type("auto", kvm_runs_guests(probe_kernel))
    say(
        f"libvirt: guests run as type {rec.domain_type} ({'KVM runs guests' if rec.domain_type == 'kvm' else 'KVM cannot run a guest here: software emulation'})"
    )
    write_record(rec)
    return rec


def _start_sandbox() -> HostRecord:
    say(f"libvirt: starting a private libvirtd in network namespace {NAMESPACE}")
    text = QEMU_CONF.read_text() if QEMU_CONF.exists() else ""
    if "# l2dsr sandbox" not in text:
        QEMU_CONF.write_text(text + QEMU_CONF_BLOCK)
    if subprocess.run(["ip", "netns", "pids", NAMESPACE], capture_output=True).returncode != 0:
        subprocess.run(["ip", "netns", "add", NAMESPACE], check=True)
    subprocess.run(["ip", "-n", NAMESPACE, "link", "set", "lo", "up"], check=True)
    # An empty resolver: nothing inside waits on DNS timeouts towards the outside.
    resolv = Path("/etc/netns") / NAMESPACE / "resolv.conf"
    resolv.parent.mkdir(parents=True, exist_ok=True)
    resolv.write_text("")
    # What the package's tmpfiles.d would create under systemd (libvirt writes there at domain start).
    for directory in ("/var/lib/libvirt/dnsmasq", "/var/log/libvirt/qemu", "/var/cache/libvirt/qemu", "/run/libvirt"):
        Path(directory).mkdir(parents=True, exist_ok=True)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    rec = HostRecord(libvirtd="sandbox", namespace=NAMESPACE)
    write_record(rec)  # from here on, teardown knows about the namespace
    ns = ["ip", "netns", "exec", NAMESPACE]
    for daemon in ("virtlogd", "libvirtd"):
        # Foreground daemons (`ip netns exec` execs them): the PID we record is the daemon's own.
        proc = subprocess.Popen(
            [*ns, daemon, "--pid-file", str(RUN_DIR / f"{daemon}.pid")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        rec.pids[daemon] = proc.pid
        write_record(rec)
    deadline = time.monotonic() + 30
    while not VIRSH.ok("version"):
        if time.monotonic() > deadline:
            raise StepFailed("libvirtd did not answer within 30 s (try: ip netns exec l2dsr libvirtd -v)")
        time.sleep(0.3)
    return rec


def teardown(force: bool = False) -> None:
    """Stop exactly what setup started. Refuses while domains still run, unless forced."""
    rec = read_record()
    if rec is None:
        say("libvirt host: nothing of ours to tear down")
        return
    if rec.libvirtd == "sandbox" and ours_running(rec):
        domains = [d for d in VIRSH.run("list", "--all", "--name", check=False).split() if d]
        if domains and not force:
            raise StepFailed(
                f"domains still defined: {' '.join(domains)}; run ./labctl destroy first (or down --force)"
            )
        for d in domains:
            VIRSH.run("destroy", d, check=False)
            VIRSH.run("undefine", d, check=False)
    if rec.created_pool:
        VIRSH.run("pool-destroy", POOL_NAME, check=False)
        VIRSH.run("pool-undefine", POOL_NAME, check=False)
    for name, pid in rec.pids.items():
        if stop(pid):
            say(f"stopped {name} (pid {pid})")
    if rec.namespace:
        subprocess.run(["ip", "netns", "delete", rec.namespace], capture_output=True)
        say(f"deleted network namespace {rec.namespace}")
    RECORD.unlink(missing_ok=True)
