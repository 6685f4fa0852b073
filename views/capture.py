"""`./labctl capture VM`: tcpdump on the host side of a VM's NIC (its tap, on the VM's libvirt host),
so it costs the guest nothing and sees exactly the frames the guest sent and received (pure: the
command line; hypervisor/capture.py runs it here or over SSH on the VM's host)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

DEFAULT_SECONDS = 10  # bounded by default: never left running
MAX_SECONDS = 3600


class CaptureError(ValueError):
    """A capture request that cannot run as asked: what is wrong and the fix."""


@dataclass(frozen=True)
class Capture:
    vm: str
    interface: str = ""  # the guest's NIC (eth0 ...): its tap is what is captured; default the first
    bpf: str = ""
    seconds: int | None = None
    count: int | None = None
    write: str = ""  # a pcap file on this machine
    pcap: bool = False  # a pcap stream on stdout (piped to wireshark -k -i -)


USAGE = "usage: ./labctl capture VM [--interface NAME] [--filter BPF] [--seconds N | --count N] [--write FILE]"


def parse_args(args: list[str], stdout_is_tty: bool) -> Capture:
    """The command's arguments: a pcap stream when stdout is not a terminal (or --write), a decoded
    summary with link-layer headers on a terminal. Without --seconds or --count: 10 seconds."""
    if not args or args[0].startswith("-"):
        raise CaptureError(USAGE)
    vm, rest = args[0], list(args[1:])
    opts: dict[str, str] = {}
    while rest:
        flag = rest.pop(0)
        if flag not in ("--interface", "--filter", "--seconds", "--count", "--write") or not rest:
            raise CaptureError(f"{flag}: not an option of capture, or its value is missing\n{USAGE}")
        opts[flag] = rest.pop(0)
    seconds = count = None
    for flag in ("--seconds", "--count"):
        if flag in opts:
            value = opts[flag]
            if not value.isdigit() or int(value) < 1:
                raise CaptureError(f"{flag} {value!r}: give a whole number from 1")
            if flag == "--seconds" and int(value) > MAX_SECONDS:
                raise CaptureError(f"--seconds {value}: at most {MAX_SECONDS} (a capture is bounded)")
            seconds, count = (int(value), count) if flag == "--seconds" else (seconds, int(value))
    if seconds is None and count is None:
        seconds = DEFAULT_SECONDS
    write = opts.get("--write", "")
    return Capture(
        vm=vm,
        interface=opts.get("--interface", ""),
        bpf=opts.get("--filter", ""),
        seconds=seconds,
        count=count,
        write=write,
        pcap=bool(write) or not stdout_is_tty,
    )


def tap_of(nics: list[tuple[str, str]], interface: str, guest_ifaces: list[str]) -> str:
    """The tap of the guest's NIC: the first, or the one in the place of INTERFACE among the guest's
    NICs (libvirt lists them in the guest's order, eth0 first)."""
    if not nics:
        raise CaptureError("the domain has no NIC that libvirt lists (is it running?)")
    if not interface:
        return nics[0][0]
    if interface in guest_ifaces and guest_ifaces.index(interface) < len(nics):
        return nics[guest_ifaces.index(interface)][0]
    raise CaptureError(f"--interface {interface}: the VM's NICs are {', '.join(guest_ifaces) or 'eth0'}")


def tcpdump_command(cap: Capture, tap: str) -> str:
    """The shell command on the VM's host. `timeout -s INT` ends tcpdump as Ctrl-C would (it flushes
    and prints its counts); -U writes each packet as it comes (a live stream); -l line-buffers the
    decoded text."""
    argv = ["tcpdump", "-i", tap, "-nn"]
    argv += ["-U", "-w", "-"] if cap.pcap else ["-e", "-l"]
    if cap.count:
        argv += ["-c", str(cap.count)]
    if cap.bpf:
        argv.append(cap.bpf)
    command = shlex.join(argv)
    if cap.seconds:
        command = f"timeout -s INT {cap.seconds} {command}"
    return command
