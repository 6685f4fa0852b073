"""The lab's bottom floor: the typed spec every layer reads, and the problems validation reports.

Pure types, importing nothing else of the project. `lab/config.py` reads the stack's values into a
`LabSpec`; `lbmodes.load_lab` resolves the mode and adds the checks that need one.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

PROJECT = "l2dsr"
ROLES = ("client", "lb", "web")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the configuration: the key (without `l2dsr:`) and the text, which says the fix."""

    key: str
    text: str

    def __str__(self) -> str:
        return f"{PROJECT}:{self.key}: {self.text}"


class ConfigError(ValueError):
    """Bad configuration: one line per problem, each naming the key and the fix."""

    def __init__(self, problems: list[Problem], warnings: list[str] | tuple[str, ...] = ()):
        self.problems = problems
        self.warnings = tuple(warnings)  # what was found beside the problems (resolution.resolve)
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid {PROJECT} configuration ({len(problems)} problem(s)):\n{lines}")


@dataclass(frozen=True)
class HostSpec:
    """One libvirt host of the lab (`l2dsr:hosts`): where its VMs run and how the lab reaches it."""

    name: str
    uri: str  # libvirt's URI for it: qemu:///system, qemu+ssh://user@host/system
    address: str = ""  # where the other hosts reach it (the VXLAN underlay) and where SSH reaches it
    user: str = ""  # SSH user for host-side steps (the tunnel, consoles) and as the jump to its guests
    identity_file: str = ""  # SSH key for that user; empty: ssh's own defaults and agent

    @property
    def local(self) -> bool:
        """Its libvirtd is on the machine running pulumi: host-side steps run here, guests are reached directly."""
        return not urlsplit(self.uri).netloc


@dataclass(frozen=True)
class Fault:
    """The fault run's fault (`l2dsr:benchFault`): what happens to which web, and when, in seconds of the run."""

    action: str  # stop-web: nginx stopped (connections refused); kill-web: the VM paused (nothing answers)
    web: str
    at_s: int
    restore_s: int

    def __str__(self) -> str:
        return f"{self.action}:{self.web}@{self.at_s}s-{self.restore_s}s"


SEARCH_TESTS = {  # RFC 9411's two, by what they keep alive
    "connections": False,  # connections per second: a connection per request
    "transactions": True,  # transactions per second: requests over kept-alive connections
}


@dataclass(frozen=True)
class SearchSpec:
    """The capacity search's settings (`l2dsr:benchSearch...`; lab/search.py reads them)."""

    tests: tuple[str, ...]  # names in SEARCH_TESTS
    file_sizes_kib: tuple[int, ...]
    trial_s: int
    confirm_s: int
    precision_pct: int
    max_trials: int
    max_failed_ppm: int
    p99_ms: int
    start_rps: int  # 0: the preview's estimate


@dataclass(frozen=True)
class LabSpec:
    mode: str  # the LB mode's name; resolved once into its object by lbmodes.load_lab
    web_count: int
    client_count: int
    vip: ipaddress.IPv4Address
    front_subnet: ipaddress.IPv4Network
    server_subnet: ipaddress.IPv4Network
    first_web_address: ipaddress.IPv4Address
    vcpus: dict[str, int]
    memory_mib: dict[str, int]
    libvirt_uri: str
    hosts: tuple[HostSpec, ...]  # one (libvirtUri) unless l2dsr:hosts lists several
    placement: dict[str, str]  # role or VM name -> host name (l2dsr:placement); the rest is placed by lab/placement.py
    domain_type: str
    boot_concurrency: int  # 0: one per host CPU
    storage_pool: str
    image: str
    image_sha256: str
    image_family: str
    haproxy_threads: int
    ipvs_upper_threshold: int
    ipvs_lower_threshold: int
    ipvs_health_check: str  # none (the seed's static rules) | keepalived
    ipvs_check: str  # http | tcp: keepalived's check of each web
    ipvs_check_interval_s: int
    ipvs_check_fall: int
    lb_tuning: str  # none | seed (lab/tuning.py)
    https: bool
    bench_tool: str
    bench_keepalive: bool  # false (the seed's ab): a connection per request
    bench_scheme: str  # http, or https against the LB's TLS frontend
    bench_concurrency: tuple[int, ...]  # per step, summed over the clients
    bench_requests: tuple[int, ...]  # per step (expanded to one per concurrency value)
    bench_threads: tuple[int, ...]  # HAProxy nbthread per matrix row (proxy); empty: haproxy_threads
    bench_repeats: int
    bench_file_size_kib: int
    bench_max_minutes: int  # refused at preview above this estimate (bench/cost.py)
    bench_trigger: str
    bench_fault: Fault | None  # a fault run after the steps (l2dsr:benchFault); None: no fault run
    bench_fault_seconds: int
    bench_search: SearchSpec | None = None  # a capacity search after the steps (l2dsr:benchSearch); None: none

    @property
    def image_is_builtin(self) -> bool:
        return self.image == "builtin"

    @property
    def served_kib(self) -> int:
        """What every web serves from its page cache: /dummy_file and the search's files."""
        return self.bench_file_size_kib + sum(self.bench_search.file_sizes_kib if self.bench_search else ())

    @property
    def per_client_concurrency(self) -> int:
        """The most connections one client holds in any step (the steps' totals split over the clients)."""
        return -(-max(self.bench_concurrency or (1,)) // max(1, self.client_count))

    @property
    def max_concurrency(self) -> int:
        return max(self.bench_concurrency or (1,))
