"""./labctl: set up the host, run the lab, run the tests. `./labctl help` lists the commands."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench import report
from hypervisor import cleanup, downloads, image, inspection, libvirt, paths, pulumi_cli, recovery, simhosts, vmssh
from hypervisor.progress import StepFailed, in_parallel, say
from lab import config
from runtime.hostfacts import RecordUnreadable, atomic_write
from virt import ownership

DEFAULT_STACK = "lab"
USAGE = """usage: ./labctl COMMAND [ARGS]

  up [STACK]        set up the host, then `pulumi up` the stack (default: lab) and print its results
  destroy [STACK]   `pulumi destroy` the stack: every domain, volume and network it made
  pulumi ARGS...    any pulumi command, with the lab's environment (e.g. ./labctl pulumi config set mode dsr)
  test [ARGS...]    set up the host, then the fast tests, then (if they pass) the lab's; ARGS: pytest's instead
  setup             only the host: packages, base image, libvirt (or our own in a namespace), engine
  image             only the offline base image
  fetch [STACK]     only the stack's cloud image, when l2dsr:image is a URL (up does it too)
  report [PATH...]  Markdown and PNG charts from saved results (default: the newest run of every stack)
  down [--force [--orphans]]  stop what setup started (libvirtd, namespace, pool, simulated hosts); --force also
                    removes this checkout's stacks' domains, networks and volumes (never an object without the
                    lab's marker); --orphans also those whose marker names a local state that no longer exists
  hosts up N        simulate hosts 2..N on this machine for a lab across hosts (Pulumi.twohost.yaml): each its
                    own namespace, libvirtd and sshd, joined to host 1 (the lab's libvirtd) by an underlay
  hosts down [--force]  stop the simulated hosts (refused while they hold domains, unless --force)
  sh [COMMAND...]   a command (default: a shell) inside the lab's namespaces, e.g. ./labctl sh virsh list --all
  ssh VM [COMMAND]  log in to a VM of the stack (L2DSR_STACK, default lab), through its host when remote
  status [STACK] [--json]  each VM's role, host, state, addresses, MAC, tap and services; the mode, the
                    health check, the tunnels and the newest result (what cannot be read is said so)
  capture VM [--interface NAME] [--filter BPF] [--seconds N | --count N] [--write FILE]
                    tcpdump on the host side of the VM's NIC (L2DSR_STACK's VM): a pcap stream when piped
                    (./labctl capture lb | wireshark -k -i -), decoded with link-layer headers on a terminal;
                    10 s unless --seconds or --count says otherwise
  graph [STACK]     the lab drawn with the newest result's bytes on each path: results/STACK-graph.{dot,svg,png}
"""


def log_file(name: str) -> Path:
    return paths.state_dir() / "logs" / f"{name}.log"


def setup(tools: tuple[str, ...] = ()) -> libvirt.HostRecord:
    """The host, as a graph of two branches that run at once, each step with its log and a line when
    it starts and ends (and every 30 s, the steps still running); the first that fails is the error,
    and the other branch is stopped:
    - the engine: the Pulumi CLI's Go build (CPU), started by ./labctl beside the virtualenv when
      the CLI must be built;
    - the host: the Debian packages, the image (debootstrap: network and disk), then libvirt and
      its KVM probe (which boots the image's kernel), then `tools` (the test command's checkers).
    Guests need the image and libvirt; `pulumi up` also needs the engine."""
    start = time.monotonic()

    def host() -> libvirt.HostRecord:
        libvirt.install_packages(libvirt.HOST_PACKAGES, log_file("setup"))
        built = image.build()
        rec = libvirt.setup(probe_kernel=built.kernel)
        if tools:
            # Installed here, outside the lab's namespace, which has no way to the package mirror.
            libvirt.install_packages(tools, log_file("setup"), tools_only=True)
        return rec

    rec = in_parallel({"host": host, "pulumi": pulumi_cli.ensure_pulumi_step})["host"]
    say(f"host ready in {time.monotonic() - start:.0f} s")
    return rec


def pulumi(args: list[str], rec: libvirt.HostRecord | None = None, check: bool = True) -> int:
    """Run the pulumi CLI in the project, where the lab's addresses are (inside the namespace)."""
    rec = rec or libvirt.read_record()
    argv = [*libvirt.in_namespace(rec), str(pulumi_cli.bin_dir() / "pulumi"), *args]
    rc = subprocess.call(argv, cwd=paths.PROJECT_DIR, env=pulumi_cli.pulumi_env())
    if check and rc != 0:
        raise StepFailed(f"pulumi {' '.join(args)} exited {rc}")
    return rc


def backend_dir() -> Path:
    return Path(pulumi_cli.pulumi_env()["PULUMI_BACKEND_URL"].removeprefix("file://"))


def checkout_state() -> str:
    """This checkout's Pulumi state: what the markers of its stacks' objects name (virt/ownership.py)."""
    return pulumi_cli.pulumi_env()["PULUMI_BACKEND_URL"]


def stack_file_from_template(stack: str) -> None:
    """A shipped stack's file for this checkout, copied from its tracked template when it has none:
    Pulumi writes this checkout's secrets salt (and every `config set`) into the copy, never into a
    tracked file."""
    own, template = config.stack_file(stack), config.stack_template(stack)
    if own.exists() or not template.exists():
        return
    kept = [line for line in template.read_text().splitlines(keepends=True) if not line.startswith("encryptionsalt:")]
    atomic_write(own, "".join(kept), mode=0o644)
    say(f"stack {stack}: {own.relative_to(paths.PROJECT_DIR)} made from {template.name} (this checkout's own)")


def stacks_named(args: list[str]) -> list[str]:
    """The stacks a pulumi command line names (`--stack X`, `-s X`, `--stack=X`), else the default."""
    named = [b for a, b in zip(args, args[1:], strict=False) if a in ("--stack", "-s")]
    named += [a.split("=", 1)[1] for a in args if a.startswith("--stack=")]
    return named or [DEFAULT_STACK]


def select_stack(stack: str, rec: libvirt.HostRecord, create: bool = True) -> None:
    stack_file_from_template(stack)
    pulumi(["stack", "select", *(["--create"] if create else []), stack], rec)
    left = recovery.clear_stale_locks(backend_dir(), stack)
    if left:
        raise StepFailed(
            f"stack {stack} is locked by a pulumi that still runs ({'; '.join(left)}): wait for it, or, if it is "
            f"gone, ./labctl pulumi cancel --stack {stack} --yes"
        )


def test_basetemp() -> Path:
    """pytest's temporary directories for this checkout: the test stacks' states live under it, so
    the markers of their objects say they are the test run's."""
    return paths.state_dir() / "test-runs"


# Lab tests that do not fit CI's time: run on demand (./labctl test -m MARKER), as pyproject's addopts say.
ON_DEMAND = ("scale", "deep")
_NOT_ON_DEMAND = " and ".join(f"not {m}" for m in ON_DEMAND)
FAST_TIER = ["-m", f"not lab and {_NOT_ON_DEMAND}"]
LAB_TIER = ["-m", f"lab and {_NOT_ON_DEMAND}"]


def tiers(args: list[str]) -> list[list[str]]:
    """With no arguments, the fast tests first, and the lab's only if they all pass (a lint error is
    seen in minutes, not after the end-to-end run); with arguments, pytest's run as given."""
    return [FAST_TIER, LAB_TIER] if not args else [args]


def test(args: list[str]) -> int:
    """Set up, run pytest where the lab's addresses are, then remove what the run's stacks left (only
    objects whose marker names a state under its directory), and stop a sandbox this run started
    unless something not the test run's runs in it."""
    was_running = libvirt.ours_running(libvirt.read_record())
    # The checkers of rendered files, and what the end-to-end test's simulated hosts run (their sshd).
    rec = setup(tools=(*libvirt.TEST_PACKAGES, *simhosts.PACKAGES))
    basetemp = test_basetemp()
    extra = [] if any(a.startswith("--basetemp") for a in args) else [f"--basetemp={basetemp}"]
    argv = [*libvirt.in_namespace(rec), str(pulumi_cli.venv_python()), "-m", "pytest", *extra]
    try:
        runs = tiers(args)
        for tier in runs:
            rc = subprocess.call([*argv, *tier], cwd=paths.PROJECT_DIR, env=pulumi_cli.pulumi_env())
            if rc != 0:
                if tier != runs[-1]:
                    say("the fast tier failed: the lab tier (real guests, end to end) is not run")
                return rc
        return 0
    finally:
        if rec.libvirtd == "sandbox":
            states = (f"file://{basetemp}",)
            # the end-to-end test stops its own simulated hosts; this is for one that could not
            simhosts.down(force=True, states=states)
            if was_running:
                cleanup.remove_ours(
                    libvirt.virsh_of(rec), ownership.of_state(*states), "libvirt", ip_prefix=libvirt.in_namespace(rec)
                )
            else:
                cleanup.teardown(force=True, states=states)


def shell(args: list[str]) -> int:
    """A command (default: a shell) where the lab is: its namespaces, its libvirtd's socket and files."""
    rec = libvirt.read_record()
    if not libvirt.ours_running(rec) and not (rec and rec.libvirtd == "system"):
        raise StepFailed("the lab's libvirtd does not run: ./labctl setup starts it")
    return subprocess.call([*libvirt.in_namespace(rec), *(args or ["bash"])], env=pulumi_cli.pulumi_env())


def stack_of(args: list[str]) -> str:
    return args[0] if args else DEFAULT_STACK


def cmd_setup(args: list[str]) -> None:
    setup()


def cmd_image(args: list[str]) -> None:
    image.build()


def cmd_fetch(args: list[str]) -> None:
    downloads.fetch_for_stack(stack_of(args))


def cmd_up(args: list[str]) -> None:
    stack = stack_of(args)
    rec = setup()
    downloads.fetch_for_stack(stack)
    select_stack(stack, rec)
    pulumi(["up", "--yes", "--skip-preview", "--stack", stack], rec)
    pulumi(["stack", "output", "resultsTable", "--stack", stack], rec)


def cmd_destroy(args: list[str]) -> None:
    stack = stack_of(args)
    rec = setup()  # after a reboot the namespace and libvirtd are gone, the domains' definitions are not
    select_stack(stack, rec, create=False)  # clears a stale lock; a stack that is not there stays so
    pulumi(["destroy", "--yes", "--skip-preview", "--stack", stack], rec)


def cmd_pulumi(args: list[str]) -> int:
    for stack in stacks_named(args):  # a shipped stack's file, before pulumi reads it
        stack_file_from_template(stack)
    return pulumi(args, check=False)


def cmd_down(args: list[str]) -> None:
    states = (checkout_state(),)
    simhosts.down(force="--force" in args, states=states)
    cleanup.teardown(force="--force" in args, states=states, orphans="--orphans" in args and "--force" in args)


def cmd_hosts(args: list[str]) -> int | None:
    if args[:1] == ["up"] and len(args) == 2 and args[1].isdigit():
        setup()
        simhosts.up(int(args[1]), log_file("hosts"))
    elif args[:1] == ["down"]:
        simhosts.down(force="--force" in args, states=(checkout_state(),))
    else:
        return usage_error()
    return None


def cmd_ssh(args: list[str]) -> int:
    if not args:
        return usage_error()
    return vmssh.main(args, libvirt.read_record())


def usage_error() -> int:
    print(USAGE, file=sys.stderr)
    return 2


# Each command of USAGE, by its word: a function of its arguments that returns its exit status (None: 0).
COMMANDS: dict[str, Callable[[list[str]], int | None]] = {
    "up": cmd_up,
    "destroy": cmd_destroy,
    "pulumi": cmd_pulumi,
    "test": test,
    "setup": cmd_setup,
    "image": cmd_image,
    "fetch": cmd_fetch,
    "report": report.main,
    "down": cmd_down,
    "hosts": cmd_hosts,
    "sh": shell,
    "ssh": cmd_ssh,
    "status": inspection.cmd_status,
    "capture": inspection.cmd_capture,
    "graph": inspection.cmd_graph,
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("help", "-h", "--help"):
        print(USAGE)
        return 0
    command = COMMANDS.get(argv[0])
    if command is None:
        return usage_error()
    try:
        return command(argv[1:]) or 0
    except (StepFailed, RecordUnreadable) as e:
        say(f"error: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
