"""The l2dsr lab: networks, web tier, load balancer, clients and the benchmark, from one config."""

from __future__ import annotations

import pulumi

from bench.cost import cost_problems
from bench.report import as_outputs, results_table
from components.benchmark import Benchmark, BenchmarkArgs, bench_spec
from components.client import Clients, ClientsArgs
from components.image import BaseImage, BaseImageArgs, ImageMissing, resolve_image
from components.loadbalancer import LoadBalancer, LoadBalancerArgs
from components.network import LabNetwork, LabNetworkArgs
from components.vm import GuestConfig, VmSite
from components.webtier import WebTier, WebTierArgs
from lab.addressing import plan as address_plan
from lab.config import project_schema, stack_values
from lab.hostfit import HostFacts, host_fit
from lab.spec import PROJECT, ROLES, ConfigError
from lab.tuning import tuning_of
from lbmodes import load_lab
from resources.identity import SshKey, SshKeyArgs, StackIdentity, StackIdentityArgs
from runtime.hostfacts import PROJECT_DIR, DomainTypeUnknown, resolve_domain_type
from virt.virsh import Virsh
from virt.xml import domain_tuning

# ---- configuration: read once, validated before any resource is registered ---------------------
stack = pulumi.get_stack()
try:
    # Values through the public API; every key the stack's file sets is passed too, so a misspelt
    # one is refused rather than silently ignored (the SDK can read a key, not list them).
    config = pulumi.Config(PROJECT)
    values = {key: config.get(key) for key in (*project_schema(), *stack_values(stack))}
    spec, mode = load_lab(values)
    plan = address_plan(spec)
    domain_type = resolve_domain_type(spec.domain_type)
    node = Virsh(spec.libvirt_uri).nodeinfo()
    problems, warnings = host_fit(spec, domain_type, HostFacts(*node) if node else None)
    cost, too_long = cost_problems(spec, mode, domain_type)
    problems += too_long
    if problems:
        raise ConfigError(problems)
    image = resolve_image(spec)
except (ConfigError, ImageMissing, DomainTypeUnknown) as e:
    raise pulumi.RunError(str(e)) from None
for warning in warnings:
    pulumi.warn(f"{PROJECT}: {warning}")
pulumi.log.info(f"{PROJECT}: the benchmark: {cost.explain()} (l2dsr:benchMaxMinutes {spec.bench_max_minutes})")

# ---- the lab -----------------------------------------------------------------------------------
identity = StackIdentity("identity", StackIdentityArgs(project=pulumi.get_project(), stack=stack))
key = SshKey("ssh-key", SshKeyArgs(comment=f"l2dsr-{stack}"))
network = LabNetwork("network", LabNetworkArgs(uri=spec.libvirt_uri, stack=stack, plan=plan, owner=identity.owner))
base = BaseImage(
    "base",
    BaseImageArgs(uri=spec.libvirt_uri, pool=spec.storage_pool, stack=stack, source=image),
    pulumi.ResourceOptions(depends_on=[network]),
)
site = VmSite(
    stack=stack,
    uri=spec.libvirt_uri,
    pool=spec.storage_pool,
    domain_type=domain_type,
    network=network.name,
    network_run=network.run_token,
    owner=identity.owner,
    base_path=base.path,
    boot=image.boot,
    private_key=key.private_key,
    lab_vcpus=sum(spec.vcpus[g.role] for g in plan.guests),
    boot_slots=spec.boot_concurrency,
)
guest_config = GuestConfig(spec=spec, mode=mode, plan=plan, ssh_public_key=key.public_key)
sized = {role: {"vcpus": spec.vcpus[role], "memory_mib": spec.memory_mib[role]} for role in ROLES}
webs = WebTier("web", WebTierArgs(site=site, config=guest_config, guests=plan.webs, **sized["web"]))
lb_tuning = tuning_of(spec.lb_tuning, spec.vcpus["lb"])
lb = LoadBalancer(
    "lb",
    LoadBalancerArgs(
        site=site,
        config=guest_config,
        guest=plan.lb,
        **sized["lb"],
        tuning=domain_tuning(lb_tuning, node[0] if node else None) if lb_tuning else None,
    ),
)
clients = Clients("client", ClientsArgs(site=site, config=guest_config, guests=plan.clients, **sized["client"]))
all_vms = [*clients.vms, lb.vm, *webs.vms]

bench = Benchmark(
    "bench",
    BenchmarkArgs(
        plan=bench_spec(stack, spec, mode, plan, {vm.ref.name: vm.ref for vm in all_vms}),
        vms=all_vms,
        private_key=key.private_key,
        trigger=spec.bench_trigger,
        results_dir=str(PROJECT_DIR / "results"),
    ),
)

# ---- outputs: the interface users script against (camelCase keys, as Pulumi's own) ----------------
pulumi.export("mode", mode.name)
pulumi.export("vip", str(plan.vip))
pulumi.export("domainType", domain_type)
pulumi.export("vms", [{"name": vm.ref.domain, "role": vm.ref.role, "address": vm.ref.address} for vm in all_vms])
pulumi.export(
    "boot",
    {
        vm.ref.name: {
            "seconds": vm.ready.seconds,
            "memoryAvailableMiB": vm.ready.memory_available_mib,
            "memoryTotalMiB": vm.ready.memory_total_mib,
            "resets": vm.ready.resets,
            "cpuSeconds": vm.ready.cpu_seconds,
            "waitedSeconds": vm.ready.waited_s,
        }
        for vm in all_vms
    },
)
pulumi.export("results", bench.result.apply(lambda r: as_outputs(r["runs"])))
pulumi.export("summary", bench.result.apply(lambda r: as_outputs(r["summary"])))
pulumi.export("resultsTable", bench.result.apply(lambda r: results_table(r["summary"])))
pulumi.export("requestsPerWeb", bench.result.apply(lambda r: r["requests_per_web"]))
pulumi.export(
    "byteCounters",
    bench.result.apply(
        lambda r: [
            {
                "lb": as_outputs(run["lb_bytes"]),
                "clients": as_outputs(run["client_bytes"]),
                "lbSentShare": run["lb_sent_share"],
                "lbResponseShare": run["lb_response_share"],
            }
            for run in r["runs"]
        ]
    ),
)
pulumi.export(
    "benchEstimate",
    {"runs": cost.runs, "minutes": round(cost.minutes, 1), "requestsPerSecond": round(cost.requests_per_second)},
)
pulumi.export("resultsDir", bench.result.apply(lambda r: r["raw_dir"]))
