"""What the three LVS/IPVS modes share: the seed's ipvsadm service, restored at boot by a unit.

They differ in the forwarding method of each real server (ipvsadm's -g, -i, -m) and in what the
webs need for it.
"""

from __future__ import annotations

from lab.addressing import AddressPlan
from lab.files import RoleSetup, WriteFile, fill
from lab.memory import mib
from lab.spec import LabSpec
from lbmodes.base import Mode

MODULES = ("ip_vs", "ip_vs_rr")
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


class IpvsMode(Mode):
    forwarding: str  # ipvsadm's forwarding flag: -g (routing), -i (tunnelling), -m (masquerading)

    def lb(self, spec: LabSpec, plan: AddressPlan) -> RoleSetup:
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

    def lb_files(self, spec: LabSpec, plan: AddressPlan) -> tuple[WriteFile, ...]:
        return ()

    def lb_memory(self, spec: LabSpec) -> tuple[str, int]:
        conns = spec.max_concurrency
        return f"IPVS {conns} connections", ipvs_mib(conns)
