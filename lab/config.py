"""The lab's configuration: read once, checked up front, into the typed spec (lab/spec.py).

Defaults and types live in Pulumi.yaml (data, not code); this module reads them from there so the
Pulumi program, the tests and `./labctl` agree, and it is the one reader of a stack's file. Every
problem that needs no load-balancer mode is found here, each a `Problem` naming the key and the
fix; `lbmodes.load_lab` adds those that need the mode and raises them all at once, before any
resource is registered.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from lab.addressing import plan_problems, web_name
from lab.fault import read_fault
from lab.inventory import read_hosts, uri_problem
from lab.search import read_search
from lab.spec import PROJECT, ROLES, LabSpec, Problem
from lab.tuning import PROFILES

PROJECT_DIR = Path(__file__).resolve().parent.parent
PULUMI_YAML = PROJECT_DIR / "Pulumi.yaml"

RULES_YAML = Path(__file__).resolve().parent / "rules.yaml"
# HAProxy 2.6 on 64-bit (MAX_THREADS): a larger nbthread stops it at start. haproxyThreads' bound is
# in rules.yaml; benchThreads, a list, is checked against it here.
HAPROXY_MAX_THREADS = 64
ADDRESS_KEYS = frozenset({"vip", "frontSubnet", "serverSubnet", "firstWebAddress"})
# What the memory estimates are computed from: estimated only once these are valid.
ESTIMATE_KEYS = frozenset(
    {"haproxyThreads", "benchThreads", "benchConcurrency", "clientCount", *(f"{r}MemoryMiB" for r in ROLES)}
)


def key_rules(path: Path = RULES_YAML) -> dict[str, dict[str, Any]]:
    """lab/rules.yaml: key -> {choices} or {min, max, why}."""
    return yaml.safe_load(path.read_text())


def rule_problems(raw: Mapping[str, Any], rules: Mapping[str, Mapping[str, Any]]) -> list[Problem]:
    """Each value against its key's rule (lab/rules.yaml), the one checker of them."""
    problems = []
    for key, rule in rules.items():
        value = raw[key]
        if "choices" in rule and value not in rule["choices"]:
            problems.append(Problem(key, f"{value!r} is not one of {', '.join(rule['choices'])}; set one of them"))
        elif "max" in rule and value > rule["max"]:
            problems.append(Problem(key, f"{value} is above {rule['max']} ({rule['why']}); set {rule['max']} or less"))
        elif "min" in rule and value < rule["min"]:
            problems.append(Problem(key, f"{value} is below {rule['min']} ({rule['why']}); set {rule['min']} or more"))
    return problems


def project_schema(path: Path = PULUMI_YAML) -> dict[str, dict[str, Any]]:
    """The typed config block of Pulumi.yaml: key -> {type, default, description}."""
    return yaml.safe_load(path.read_text())["config"]


def read_spec(
    values: Mapping[str, Any] | None = None, schema: Mapping[str, Mapping[str, Any]] | None = None
) -> tuple[LabSpec, list[Problem]]:
    """Stack values (key with or without `l2dsr:`; strings or typed) over Pulumi.yaml's defaults: the
    spec, and every problem found without a load-balancer mode (lbmodes.load_lab adds the rest)."""
    schema = schema if schema is not None else project_schema()
    values = {k.removeprefix(f"{PROJECT}:"): v for k, v in (values or {}).items() if v is not None}
    problems: list[Problem] = []

    for key in sorted(set(values) - set(schema)):
        problems.append(Problem(key, f"unknown key; {did_you_mean(key, schema)}"))

    raw: dict[str, Any] = {}
    for key, decl in schema.items():
        value = values.get(key, decl.get("default"))
        try:
            raw[key] = _coerce(value, decl["type"], (decl.get("items") or {}).get("type", "integer"))
        except (ValueError, TypeError):
            kind = {"array": f"list of {(decl.get('items') or {}).get('type', 'integer')}s", "object": "map"}.get(
                decl["type"], decl["type"]
            )
            problems.append(Problem(key, f"{value!r} is not a {kind}; set a {kind} value"))
            raw[key] = decl.get("default")

    rules = {**key_rules(), "lbTuning": {"choices": PROFILES}}  # the profiles' own list (lab/tuning.py)
    problems += rule_problems(raw, rules)  # choices and bounds; the formats are parsed below

    def network(key: str) -> ipaddress.IPv4Network:
        try:
            return ipaddress.IPv4Network(raw[key], strict=True)
        except ValueError as e:
            problems.append(Problem(key, f"{raw[key]!r} is not an IPv4 subnet in CIDR form ({e}); e.g. 10.0.0.0/24"))
            return ipaddress.IPv4Network(schema[key]["default"])

    def address(key: str) -> ipaddress.IPv4Address:
        try:
            return ipaddress.IPv4Address(raw[key])
        except ValueError:
            problems.append(Problem(key, f"{raw[key]!r} is not an IPv4 address; e.g. {schema[key]['default']}"))
            return ipaddress.IPv4Address(schema[key]["default"])

    formats = {key: rule["format"] for key, rule in rules.items() if "format" in rule}
    subnets = {key: network(key) for key, kind in formats.items() if kind == "ipv4-subnet"}
    addresses = {key: address(key) for key, kind in formats.items() if kind == "ipv4-address"}
    front, server = subnets["frontSubnet"], subnets["serverSubnet"]
    vip, first_web = addresses["vip"], addresses["firstWebAddress"]

    hosts, host_problems = read_hosts(
        raw["hosts"], raw["libvirtUri"], raw["libvirtUri"] != schema["libvirtUri"]["default"]
    )
    problems.extend(host_problems)
    spec = LabSpec(
        mode=raw["mode"],  # checked against the modes by lbmodes.load_lab
        web_count=raw["webCount"],
        client_count=raw["clientCount"],
        vip=vip,
        front_subnet=front,
        server_subnet=server,
        first_web_address=first_web,
        vcpus={role: raw[f"{role}Vcpus"] for role in ROLES},
        memory_mib={role: raw[f"{role}MemoryMiB"] for role in ROLES},  # and its estimate (lbmodes)
        libvirt_uri=raw["libvirtUri"],
        hosts=hosts,
        placement={str(k): str(v) for k, v in raw["placement"].items()},
        domain_type=raw["domainType"],
        boot_concurrency=raw["bootConcurrency"],
        storage_pool=raw["storagePool"],
        image=raw["image"],
        image_sha256=raw["imageSha256"],
        image_family=raw["imageFamily"],
        haproxy_threads=raw["haproxyThreads"],
        ipvs_upper_threshold=raw["ipvsUpperThreshold"],
        ipvs_lower_threshold=raw["ipvsLowerThreshold"],
        ipvs_health_check=raw["ipvsHealthCheck"],
        ipvs_check=raw["ipvsCheck"],
        ipvs_check_interval_s=raw["ipvsCheckIntervalS"],
        ipvs_check_fall=raw["ipvsCheckFall"],
        lb_tuning=raw["lbTuning"],
        https=raw["https"],
        bench_tool=raw["benchTool"],  # checked against the load tools by lbmodes.load_lab
        bench_keepalive=raw["benchKeepAlive"],
        bench_scheme=raw["benchScheme"],
        bench_concurrency=tuple(raw["benchConcurrency"]),
        bench_requests=tuple(
            raw["benchRequests"] * len(raw["benchConcurrency"])
            if len(raw["benchRequests"]) == 1
            else raw["benchRequests"]
        ),
        bench_threads=tuple(raw["benchThreads"]),
        bench_repeats=raw["benchRepeats"],
        bench_file_size_kib=raw["benchFileSizeKiB"],
        bench_max_minutes=raw["benchMaxMinutes"],
        bench_trigger=raw["benchTrigger"],
        bench_fault=None,  # read below, once the web names are known
        bench_fault_seconds=raw["benchFaultSeconds"],
    )
    if raw["webCount"] >= 1:
        webs = [web_name(i) for i in range(raw["webCount"])]
        fault, fault_problems = read_fault(raw["benchFault"], webs, spec.bench_fault_seconds)
        problems.extend(fault_problems)
        spec = dataclasses.replace(spec, bench_fault=fault)
    search, search_problems = read_search(raw, spec.bench_file_size_kib, spec.image_is_builtin)
    spec = dataclasses.replace(spec, bench_search=search)
    problems.extend(search_problems)
    problems.extend(_matrix_problems(spec))
    if spec.ipvs_lower_threshold > spec.ipvs_upper_threshold > 0:
        problems.append(Problem("ipvsLowerThreshold", "above ipvsUpperThreshold; set it to the upper value or less"))
    elif spec.ipvs_upper_threshold == 0 < spec.ipvs_lower_threshold:
        problems.append(
            Problem(
                "ipvsUpperThreshold",
                f"0 means no limit, so ipvsLowerThreshold ({spec.ipvs_lower_threshold}) would do nothing; set an "
                f"upper threshold (the seed's: 35000), or set {PROJECT}:ipvsLowerThreshold to 0 as well",
            )
        )
    if spec.lb_tuning == "seed" and spec.vcpus["lb"] < 2:
        problems.append(
            Problem(
                "lbTuning",
                f"seed isolates LB vCPUs from the OS's vCPU 0, and lbVcpus is {spec.vcpus['lb']}; set "
                f"{PROJECT}:lbVcpus to 2 or more, or lbTuning to none",
            )
        )
    if spec.lb_tuning == "seed" and not spec.image_is_builtin:
        problems.append(
            Problem(
                "lbTuning",
                "seed puts isolcpus on the LB's kernel command line, which the lab sets only when it boots the "
                f"builtin image's kernel; set {PROJECT}:image to builtin, or lbTuning to none",
            )
        )
    if not (spec.image_is_builtin or re.match(r"^(https?://|/)", spec.image)):
        problems.append(Problem("image", f"{spec.image!r} is not builtin, an absolute path or an http(s) URL"))
    if spec.image_sha256 and not re.fullmatch(r"[0-9a-fA-F]{64}", spec.image_sha256):
        problems.append(
            Problem(
                "imageSha256",
                f"{spec.image_sha256!r} is not a SHA-256 (64 hex digits); copy it from the image's SHA256SUMS, "
                "or leave it empty",
            )
        )
    uri_wrong = uri_problem(spec.libvirt_uri)
    if uri_wrong:
        problems.append(Problem("libvirtUri", uri_wrong))
    if not ADDRESS_KEYS & {p.key for p in problems}:  # the plan, once every address and subnet parsed
        problems.extend(plan_problems(spec))
    return spec, problems


STACKS_DIR = ".stacks"  # Pulumi.yaml's stackConfigDir


def stack_file(stack: str, project_dir: Path = PROJECT_DIR) -> Path:
    """The checkout's own stack file (Pulumi reads and writes it; ignored by git)."""
    return project_dir / STACKS_DIR / f"Pulumi.{stack}.yaml"


def stack_template(stack: str, project_dir: Path = PROJECT_DIR) -> Path:
    """The tracked definition of a shipped stack, copied to stack_file() by ./labctl when it has none."""
    return project_dir / f"Pulumi.{stack}.yaml"


def stack_values(stack: str, project_dir: Path = PROJECT_DIR) -> dict[str, Any]:
    """The `l2dsr:` keys a stack's file sets (prefix removed): what `./labctl` reads of a stack, and how
    the program learns which keys a stack sets (the SDK's public API reads a key, it cannot list them)."""
    path = stack_file(stack, project_dir)
    config = (yaml.safe_load(path.read_text()) or {}).get("config") or {} if path.exists() else {}
    return {k.removeprefix(f"{PROJECT}:"): v for k, v in config.items() if k.startswith(f"{PROJECT}:")}


def did_you_mean(key: str, schema: Mapping[str, Any]) -> str:
    """The fix for a misspelt key: the nearest known key (case and small typos), else where they are listed."""
    lowered = {k.lower(): k for k in schema}
    match = lowered.get(key.lower()) or next(iter(difflib.get_close_matches(key, list(schema), n=1, cutoff=0.75)), None)
    if match:
        return f"did you mean {PROJECT}:{match}? (`pulumi config rm {PROJECT}:{key}`, then set {PROJECT}:{match})"
    return "known keys are listed in Pulumi.yaml"


def _matrix_problems(spec: LabSpec) -> list[Problem]:
    problems: list[Problem] = []
    conc, reqs = spec.bench_concurrency, spec.bench_requests
    if not conc:
        problems.append(Problem("benchConcurrency", "empty; give at least one value, e.g. [20]"))
    if len(reqs) not in (1, len(conc)):
        problems.append(
            Problem(
                "benchRequests",
                f"{len(reqs)} values for {len(conc)} benchConcurrency values; give one value, "
                "or one per concurrency value",
            )
        )
    elif conc:
        for c, n in zip(conc, reqs, strict=True):
            if c < spec.client_count:
                problems.append(
                    Problem(
                        "benchConcurrency",
                        f"{c} is below clientCount ({spec.client_count}); every client needs a connection",
                    )
                )
            if n < c:
                problems.append(
                    Problem(
                        "benchRequests",
                        f"{n} is below its concurrency ({c}); ab needs at least one request per connection",
                    )
                )
    if any(not 1 <= t <= HAPROXY_MAX_THREADS for t in spec.bench_threads):
        problems.append(
            Problem(
                "benchThreads",
                f"{list(spec.bench_threads)} has a value outside 1 to {HAPROXY_MAX_THREADS} "
                "(HAProxy 2.6's nbthread); use values in that range",
            )
        )
    if any(c < 1 for c in conc):
        problems.append(Problem("benchConcurrency", f"{list(conc)} has a value below 1; ab needs a connection"))
    return problems


def _coerce(value: Any, kind: str, items: str = "integer") -> Any:
    if kind == "object":  # a map: JSON from Pulumi, or one from a stack file or a test
        value = json.loads(value) if isinstance(value, str) else value
        if not isinstance(value, Mapping):
            raise ValueError(value)
        return dict(value)
    if kind == "integer":
        if isinstance(value, bool):
            raise ValueError(value)
        return int(value)
    if kind == "array":  # a JSON list from Pulumi, or one plain value
        if isinstance(value, str):
            value = json.loads(value) if value.strip().startswith("[") else [value]
        if not isinstance(value, (list, tuple)):
            value = [value]
        return [_coerce(v, items) for v in value]
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "false"):
            return str(value).lower() == "true"
        raise ValueError(value)
    return "" if value is None else str(value)
