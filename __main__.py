"""The l2dsr lab: networks, web tier, load balancer, clients and the benchmark, from one config."""

from __future__ import annotations

import pulumi

from bench.capacity_report import capacity_table
from bench.report import as_outputs, fault_table, results_table
from bench.spec import bench_spec
from components.benchmark import Benchmark, BenchmarkArgs
from components.client import Clients, ClientsArgs
from components.image import BaseImage, BaseImageArgs, ImageMissing, resolve_image
from components.loadbalancer import LoadBalancer, LoadBalancerArgs
from components.network import LabNetwork, LabNetworkArgs, network_def, segment_mtu
from components.vm import GuestConfig, Sites, VmSite
from components.webtier import WebTier, WebTierArgs
from guest.state import role_units
from lab.config import project_schema, stack_values
from lab.spec import PROJECT, ROLES, ConfigError
from lab.tuning import tuning_of
from resolution import configure, resolve
from resources.identity import SshKey, SshKeyArgs, StackIdentity, StackIdentityArgs
from runtime.hostfacts import PROJECT_DIR, DomainTypeUnknown, resolve_domain_type
from runtime.hostshell import access_problems, ref_of
from virt.hosts import probe, unreachable_message
from virt.tunnel import interface_name
from virt.xml import domain_tuning

# ---- configuration: read once, validated before any resource is registered ---------------------
stack = pulumi.get_stack()
try:
    # Values through the public API; every key the stack's file sets is passed too, so a misspelt
    # one is refused rather than silently ignored (the SDK can read a key, not list them).
    config = pulumi.Config(PROJECT)
    values = {key: config.get(key) for key in (*project_schema(), *stack_values(stack))}
    configured = configure(values, access_problems)
    spec, plan = configured.spec, configured.plan
    domain_type = resolve_domain_type(spec.domain_type)
    refs = {h.name: ref_of(h) for h in spec.hosts}
    probed = {h.name: probe(h, refs[h.name]) for h in spec.hosts}
    facts = {name: found for name, (found, _) in probed.items()}
    failed = {name: why for name, (found, why) in probed.items() if found is None}
    if failed and len(spec.hosts) > 1:  # one host: its resources' own checks say what is wrong
        raise pulumi.RunError(unreachable_message(failed, spec.hosts))
    ours = frozenset({network_def(stack, plan).bridge, interface_name(stack)})  # the lab's own devices
    lab = resolve(configured, facts, domain_type, ours)
    mode, placement, cost = lab.mode, lab.placement, lab.cost
    image = resolve_image(spec)
except (ConfigError, ImageMissing, DomainTypeUnknown) as e:
    raise pulumi.RunError(str(e)) from None
for warning in lab.warnings:
    pulumi.warn(f"{PROJECT}: {warning}")
pulumi.log.info(f"{PROJECT}: the benchmark: {cost.explain()} (l2dsr:benchMaxMinutes {spec.bench_max_minutes})")
if len(spec.hosts) > 1:
    pulumi.log.info(f"{PROJECT}: the VMs on {len(spec.hosts)} hosts:\n{placement.table(plan)}")

# ---- the lab -----------------------------------------------------------------------------------
identity = StackIdentity("identity", StackIdentityArgs(project=pulumi.get_project(), stack=stack))
key = SshKey("ssh-key", SshKeyArgs(comment=f"l2dsr-{stack}"))
network = LabNetwork(
    "network",
    LabNetworkArgs(hosts=spec.hosts, project=pulumi.get_project(), stack=stack, plan=plan, owner=identity.owner),
)
sites = {}
for i, host in enumerate(spec.hosts):
    on_host = placement.guests_on(host.name, plan)
    base = BaseImage(
        "base" if i == 0 else f"base-{host.name}",  # the first host's keeps the single-host name
        BaseImageArgs(uri=host.uri, pool=spec.storage_pool, stack=stack, source=image),
        pulumi.ResourceOptions(depends_on=network.ready[host.name]),
    )
    sites[host.name] = VmSite(
        stack=stack,
        uri=host.uri,
        pool=spec.storage_pool,
        domain_type=domain_type,
        network=network.names[host.name],
        network_run=network.run_tokens[host.name],
        owner=identity.owner,
        base_path=base.path,
        kernel=base.kernel,
        initrd=base.initrd,
        cmdline=image.boot.cmdline,
        host=refs[host.name],
        boot_group=stack if i == 0 else f"{stack}@{host.name}",
        private_key=key.private_key,
        lab_vcpus=sum(spec.vcpus[g.role] for g in on_host),
        boot_slots=spec.boot_concurrency,
    )
vm_sites = Sites({g.name: sites[placement.of[g.name]] for g in plan.guests})
guest_config = GuestConfig(lab=lab, ssh_public_key=key.public_key, mtu=segment_mtu(len(spec.hosts)))
sized = {role: {"vcpus": spec.vcpus[role], "memory_mib": spec.memory_mib[role]} for role in ROLES}
webs = WebTier("web", WebTierArgs(sites=vm_sites, config=guest_config, guests=plan.webs, **sized["web"]))
lb_tuning = tuning_of(spec.lb_tuning, spec.vcpus["lb"])
lb_host = facts.get(placement.of[plan.lb.name])
lb = LoadBalancer(
    "lb",
    LoadBalancerArgs(
        sites=vm_sites,
        config=guest_config,
        guest=plan.lb,
        **sized["lb"],
        tuning=domain_tuning(lb_tuning, lb_host.cpus if lb_host else None) if lb_tuning else None,
    ),
)
clients = Clients("client", ClientsArgs(sites=vm_sites, config=guest_config, guests=plan.clients, **sized["client"]))
all_vms = [*clients.vms, lb.vm, *webs.vms]

bench = Benchmark(
    "bench",
    BenchmarkArgs(
        bench=bench_spec(
            stack,
            lab,
            {vm.ref.name: vm.ref for vm in all_vms},
            {g.name: vm_sites.of(g).uri for g in plan.guests},
            cost.search_start_rps,  # the search's first rate unless benchSearchStartRps says one
        ),
        vms=all_vms,
        private_key=key.private_key,
        trigger=spec.bench_trigger,
        results_dir=str(PROJECT_DIR / "results"),
        segment=tuple(r for ready in network.ready.values() for r in ready),
    ),
)

# ---- outputs: the interface users script against (camelCase keys, as Pulumi's own) ----------------
guests = {g.name: g for g in plan.guests}
pulumi.export("mode", mode.name)
pulumi.export("vip", str(plan.vip))
pulumi.export("domainType", domain_type)
pulumi.export(
    "vms",
    [
        {
            "name": vm.ref.domain,
            "role": vm.ref.role,
            "address": vm.ref.address,
            "host": placement.of[vm.ref.name],
            "services": list(role_units(spec, mode, plan, guests[vm.ref.name])),  # what ./labctl status asks
        }
        for vm in all_vms
    ],
)
pulumi.export("healthCheck", mode.rotation(spec)[0])  # what takes a dead web out
pulumi.export(
    "hosts",
    [
        {
            "name": h.name,
            "uri": h.uri,
            "address": h.address,
            "user": h.user,
            "identityFile": h.identity_file,
            "vms": [g.name for g in placement.guests_on(h.name, plan)],
        }
        for h in spec.hosts
    ],
)
pulumi.export("placement", placement.table(plan))
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
# l2dsr:benchFault: the fault run's times and its second-by-second record (null without a fault)
pulumi.export("fault", bench.result.apply(lambda r: as_outputs(r.get("fault"))))
pulumi.export("faultTable", bench.result.apply(lambda r: fault_table([r["fault"]]) if r.get("fault") else ""))
# l2dsr:benchSearch: each point's capacity, what bound it, latency at half of it, every trial (null without)
pulumi.export("capacity", bench.result.apply(lambda r: as_outputs(r.get("capacity"))))
pulumi.export("capacityTable", bench.result.apply(lambda r: capacity_table(r["capacity"]) if r.get("capacity") else ""))
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
