"""The l2dsr lab: networks, web tier, load balancer, clients and the benchmark, from one config."""

from __future__ import annotations

import pulumi
from pulumi.runtime.config import CONFIG, get_config_env

from bench.report import results_table
from components.benchmark import Benchmark
from components.client import Clients
from components.context import LabContext
from components.image import BaseImage, ImageMissing, resolve_image
from components.loadbalancer import LoadBalancer
from components.network import LabNetwork
from components.providers import SshKey, StackIdentity
from components.webtier import WebTier
from hypervisor import paths
from lab.addressing import plan as address_plan
from lab.config import PROJECT, ConfigError, load_spec
from lab.hostfit import HostFacts, host_fit
from virt.hostfacts import DomainTypeUnknown, resolve_domain_type
from virt.virsh import Virsh

# ---- configuration: read once, validated before any resource is registered ---------------------
stack = pulumi.get_stack()
try:
    # Every l2dsr: key the stack sets (load_spec adds Pulumi.yaml's defaults), so a misspelt one is
    # refused rather than silently ignored.
    spec = load_spec({k: v for k, v in {**get_config_env(), **CONFIG.get()}.items() if k.startswith(f"{PROJECT}:")})
    plan = address_plan(spec)
    domain_type = resolve_domain_type(spec.domain_type)
    node = Virsh(spec.libvirt_uri).nodeinfo()
    problems, warnings = host_fit(spec, domain_type, HostFacts(*node) if node else None)
    if problems:
        raise ConfigError(problems)
    base_source, boot = resolve_image(spec)
except (ConfigError, ImageMissing, DomainTypeUnknown) as e:
    raise pulumi.RunError(str(e)) from None
for warning in warnings:
    pulumi.warn(f"{PROJECT}: {warning}")

# ---- the lab -----------------------------------------------------------------------------------
identity = StackIdentity("identity", project=pulumi.get_project(), stack=stack)  # marks our libvirt objects
key = SshKey("ssh-key", comment=f"l2dsr-{stack}")
network = LabNetwork("network", uri=spec.libvirt_uri, stack=stack, plan=plan, owner=identity.owner)
base = BaseImage("base", stack=stack, spec=spec, source=base_source, opts=pulumi.ResourceOptions(depends_on=[network]))
ctx = LabContext(
    stack=stack,
    spec=spec,
    plan=plan,
    domain_type=domain_type,
    network=network.name,
    network_run=network.run_token,
    owner=identity.owner,
    base_path=base.path,
    boot=boot,
    ssh_public_key=key.public_key,
    ssh_private_key=key.private_key,
)
webs = WebTier("web", ctx)
lb = LoadBalancer("lb", ctx)
clients = Clients("client", ctx)
all_vms = [*clients.vms, lb.vm, *webs.vms]

bench = Benchmark(
    "bench",
    stack=stack,
    spec=spec,
    plan=plan,
    vms=all_vms,
    private_key=key.private_key,
    results_dir=str(paths.PROJECT_DIR / "results"),
)

# ---- outputs: the interface users script against ------------------------------------------------
pulumi.export("mode", spec.mode)
pulumi.export("vip", str(plan.vip))
pulumi.export("domainType", domain_type)
pulumi.export("vms", [{"name": vm.name, "role": vm.host.role, "address": vm.address} for vm in all_vms])
pulumi.export(
    "boot",
    {
        vm.host.name: {
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
pulumi.export("results", bench.result.apply(lambda r: r["runs"]))
pulumi.export("summary", bench.result.apply(lambda r: r["summary"]))
pulumi.export("resultsTable", bench.result.apply(lambda r: results_table(r["summary"])))
pulumi.export("requestsPerWeb", bench.result.apply(lambda r: r["requests_per_web"]))
pulumi.export(
    "byteCounters",
    bench.result.apply(
        lambda r: [
            {
                "lb": run["lb_bytes"],
                "clients": run["client_bytes"],
                "lbSentShare": run["lb_sent_share"],
                "lbResponseShare": run["lb_response_share"],
            }
            for run in r["runs"]
        ]
    ),
)
pulumi.export("resultsDir", bench.result.apply(lambda r: r["raw_dir"]))
