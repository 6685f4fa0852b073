"""What the three LVS/IPVS modes share: the seed's ipvsadm service, restored at boot by a unit.

They differ in the forwarding method of each real server (ipvsadm's -g, -i, -m) and in what the
webs need for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from guest.files import RoleSetup, WriteFile, fill
from lab import memory
from lbmodes.base import Mode

if TYPE_CHECKING:
    from lab.addressing import AddressPlan
    from lab.config import LabSpec

MODULES = ("ip_vs", "ip_vs_rr")


def ipvsadm_rules(spec: LabSpec, plan: AddressPlan, method: str) -> str:
    """ipvsadm-restore input: the seed's `-A -t VIP:80 -s rr`, one `-a ... <method>` per web."""
    real = "\n".join(
        f"-a -t {plan.vip}:80 -r {w.address}:80 {method} -x {spec.ipvs_upper_threshold} -y {spec.ipvs_lower_threshold}"
        for w in plan.webs
    )
    return fill("ipvs/ipvsadm.rules", vip=plan.vip, real_servers=real)


class IpvsMode(Mode):
    method: str  # ipvsadm's forwarding flag

    def lb(self, spec: LabSpec, plan: AddressPlan) -> RoleSetup:
        return RoleSetup(
            modules=MODULES,
            files=(
                *self.lb_files(spec, plan),
                WriteFile("/etc/l2dsr/ipvsadm.rules", ipvsadm_rules(spec, plan, self.method)),
                WriteFile("/etc/systemd/system/l2dsr-ipvs.service", fill("ipvs/l2dsr-ipvs.service", method=self.title)),
            ),
            units=("l2dsr-ipvs.service",),
            packages=("ipvsadm",),
        )

    def lb_files(self, spec: LabSpec, plan: AddressPlan) -> tuple[WriteFile, ...]:
        return ()

    def lb_memory(self, spec: LabSpec) -> tuple[str, int]:
        conns = max(spec.bench_concurrency or (1,))
        return f"IPVS {conns} connections", memory.ipvs_mib(conns)
