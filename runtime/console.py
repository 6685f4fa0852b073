"""A guest's console log, read from the host: what a boot or a benchmark run learns without SSH.

The kernel's fatal messages (a panic, an out-of-memory kill) land here even when the guest no
longer answers; readiness (virt/) and the benchmark (bench/) both watch for them.
"""

from __future__ import annotations

import re

from runtime.hostshell import LOCAL, HostRef

FATAL_CONSOLE = (
    (re.compile(r"Kernel panic - not syncing.*"), "kernel panic"),
    (re.compile(r"Out of memory: Killed process \d+ \(\S+\).*"), "out of memory: the kernel killed a process"),
)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")


def fatal_in_console(text: str) -> str | None:
    """The first fatal kernel message in console text, as `what: line`."""
    for line in clean(text).splitlines():
        for pattern, what in FATAL_CONSOLE:
            m = pattern.search(line)
            if m:
                return f"{what} ({m.group(0).strip()})"
    return None


def clean(text: str) -> str:
    return _ANSI.sub("", text)


def tail(text: str, lines: int) -> list[str]:
    return [line for line in clean(text).splitlines() if line.strip()][-lines:]


class ConsoleWatch:
    """New text of a domain's console log since the last look (the log restarts with the domain), read
    on the domain's host (runtime/hostshell.py)."""

    def __init__(self, path: str, host: HostRef = LOCAL):
        self.path = path
        self.host = host
        self.offset = 0
        self.text = ""  # everything seen, for the final message and the report

    def read(self) -> str:
        if self.host.size_of(self.path) < self.offset:
            self.offset = 0
        data = self.host.read_from(self.path, self.offset)
        if data is None:
            return ""
        self.offset += len(data)
        new = data.decode("utf-8", "replace")
        self.text = (self.text + new)[-200_000:]
        return new


def oom_kills(console_log: str, since: int = 0, host: HostRef = LOCAL) -> tuple[str | None, int]:
    """The first OOM kill (or panic) logged on a console after byte `since`, and the log's size now."""
    watch = ConsoleWatch(console_log, host)
    watch.offset = since
    new = watch.read()
    return fatal_in_console(new), watch.offset
