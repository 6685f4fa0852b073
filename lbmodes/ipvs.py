"""What the three LVS/IPVS modes share: the seed's ipvsadm service, restored at boot by a unit, or
with `l2dsr:ipvsHealthCheck: keepalived` the same service owned by keepalived, which checks each web
and removes one that fails.

They differ in the forwarding method of each real server (ipvsadm's -g, -i, -m; keepalived's
lb_kind DR, TUN, NAT) and in what the webs need for it.
"""

from __future__ import annotations

from lab.addressing import AddressPlan
from lab.files import Check, RoleSetup, WriteFile, fill
from lab.memory import mib
from lab.spec import LabSpec
from lbmodes.base import Mode

MODULES = ("ip_vs", "ip_vs_rr")
LB_KIND = {"-g": "DR", "-i": "TUN", "-m": "NAT"}  # ipvsadm's forwarding flag -> keepalived's lb_kind
CHECKERS = {"http": "HTTP_GET", "tcp": "TCP_CHECK"}
KEEPALIVED_CONF = "/etc/keepalived/keepalived.conf"
CHECK_PATH = "/dummy_file?l2dsr-health-check"
# IPVS: a connection entry per request in flight and several more in TIME_WAIT (4 per connection,
# assumed), a few hundred bytes each.
IPVS_BASE_MIB = 4
IPVS_BYTES_PER_CONNECTION = 512


def ipvs_mib(connections: int) -> int:
    return IPVS_BASE_MIB + mib(4 * connections * IPVS_BYTES_PER_CONNECTION)


def ipvsadm_rules(spec: LabSpec, plan: AddressPlan, forwarding: str) -> str:
    """ipvsadm-restore input: the seed's `-A -t VIP:80 -s rr`, one `-a ... <forwarding>` per web."""
    real = "\n".join(
        f"-a -t {plan.vip}:80 -r {w.address}:80 {forwarding} -x {spec.ipvs_upper_threshold} -y {spec.ipvs_lower_threshold}"
        for w in plan.webs
    )
    return fill("ipvs/ipvsadm.rules", vip=plan.vip, real_servers=real)


def keepalived_conf(spec: LabSpec, plan: AddressPlan, forwarding: str) -> str:
    """keepalived.conf: the seed's virtual service and thresholds, and a check of each web
    (l2dsr:ipvsCheck), every l2dsr:ipvsCheckIntervalS, failing after l2dsr:ipvsCheckFall in a row."""
    thresholds = "".join(
        f"        {name} {value}\n"
        for name, value in (("uthreshold", spec.ipvs_upper_threshold), ("lthreshold", spec.ipvs_lower_threshold))
        if value
    )
    # The file itself, with a query that keeps the checks out of what the benchmark counts as served
    # (the webs' access-log lines of ' /dummy_file '): 2 webs checked every 2 s added 9 to a run's count.
    url = f"            url {{\n                path {CHECK_PATH}\n                status_code 200\n            }}\n"
    real = "\n".join(
        fill(
            "ipvs/keepalived-real-server.conf",
            address=w.address,
            thresholds=thresholds,
            checker=CHECKERS[spec.ipvs_check],
            url=url if spec.ipvs_check == "http" else "",
            interval=spec.ipvs_check_interval_s,
            retry=spec.ipvs_check_fall - 1,
        ).rstrip("\n")
        for w in plan.webs
    )
    return fill(
        "ipvs/keepalived.conf",
        vip=plan.vip,
        interval=spec.ipvs_check_interval_s,
        lb_kind=LB_KIND[forwarding],
        real_servers=real,
    )


class IpvsMode(Mode):
    forwarding: str  # ipvsadm's forwarding flag: -g (routing), -i (tunnelling), -m (masquerading)

    def lb(self, spec: LabSpec, plan: AddressPlan) -> RoleSetup:
        if spec.ipvs_health_check == "keepalived":
            return RoleSetup(
                modules=MODULES,
                files=(
                    *self.lb_files(spec, plan),
                    WriteFile(KEEPALIVED_CONF, keepalived_conf(spec, plan, self.forwarding)),
                    WriteFile(
                        "/etc/systemd/system/keepalived.service.d/l2dsr.conf", fill("ipvs/keepalived.service.conf")
                    ),
                    WriteFile("/etc/sysctl.d/62-l2dsr-keepalived.conf", fill("ipvs/keepalived-sysctl.conf")),
                ),
                units=("keepalived.service",),
                packages=("ipvsadm", "keepalived"),
            )
        return RoleSetup(
            modules=MODULES,
            files=(
                *self.lb_files(spec, plan),
                WriteFile("/etc/l2dsr/ipvsadm.rules", ipvsadm_rules(spec, plan, self.forwarding)),
                WriteFile("/etc/systemd/system/l2dsr-ipvs.service", fill("ipvs/l2dsr-ipvs.service", title=self.title)),
            ),
            units=("l2dsr-ipvs.service",),
            packages=("ipvsadm",),
        )

    def lb_checks(self, spec: LabSpec, plan: AddressPlan) -> tuple[Check, ...]:
        reals = " ".join(f"{w.address}:80 {self.forwarding}" for w in sorted(plan.webs, key=lambda w: str(w.address)))
        return (
            Check(f"IPVS service {plan.vip}:80 (rr)", f"ipvsadm -Sn | grep -c -- '^-A -t {plan.vip}:80 -s rr'", "1"),
            Check("IPVS real servers", "ipvsadm -Sn | awk '$1 == \"-a\" {print $5, $6}' | sort | xargs", reals),
        )

    def rotation(self, spec: LabSpec) -> tuple[str, str]:
        # A web keepalived removed is no longer listed; without it, every web always is.
        checker = "keepalived" if spec.ipvs_health_check == "keepalived" else "none (static rules)"
        return checker, (
            'ipvsadm -Ln --stats --exact | awk \'$1 == "->" && $3 ~ /^[0-9]+$/ {split($2, a, ":"); print a[1], 1, $3}\''
        )

    def lb_files(self, spec: LabSpec, plan: AddressPlan) -> tuple[WriteFile, ...]:
        return ()

    def lb_memory(self, spec: LabSpec) -> tuple[str, int]:
        conns = spec.max_concurrency
        return f"IPVS {conns} connections", ipvs_mib(conns)
