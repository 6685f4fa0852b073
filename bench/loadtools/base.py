"""The contract of a load tool: how to run it on a client, its warm-up, and how to read its output."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bench.parse import RunResult

SCHEME_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class LoadTool:
    name: str
    command: Callable[[str, int, int], str]  # (url, concurrency, requests) -> the shell command on a client
    parse: Callable[[str, int, int], RunResult]  # (output, concurrency, document length) -> numbers

    def warmup(self, url: str, concurrency: int, requests: int) -> str:
        """A short run before each measured one (caches, ARP, TCP state), with the tool itself, its output dropped."""
        small = min(concurrency, 10)
        return self.command(url, small, max(min(requests, 200), small)) + " >/dev/null"


def url(scheme: str, vip: str, path: str = "/dummy_file") -> str:
    return f"{scheme}://{vip}{path}"


def port(scheme: str) -> int:
    return SCHEME_PORTS[scheme]
