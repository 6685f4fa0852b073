"""nat: LVS/IPVS masquerading (`ipvsadm -a ... -m`).

The LB rewrites each request's destination to a web, and the web's reply, routed back through the
LB, gets the VIP as its source again. Responses cross the LB as under the proxy, but no proxy
process runs: the kernel does it. The webs hold no VIP; their route to the clients is via the LB.
"""

from __future__ import annotations

from lab.addressing import AddressPlan, Guest
from lab.files import RoleSetup, WriteFile, fill
from lab.spec import LabSpec
from lbmodes.base import through
from lbmodes.ipvs import IpvsMode


class Nat(IpvsMode):
    name = "nat"
    title = "LVS-NAT (IPVS masquerading)"
    order = 3
    forwarding = "-m"
    lb_rate_per_vcpu = 700.0  # IPVS rewrites both ways and carries the replies: half of dsr's
    shares = through("responses are bypassing the LB: a web replies to the client directly (its route?)")

    def lb_files(self, spec: LabSpec, plan: AddressPlan) -> tuple[WriteFile, ...]:
        return (WriteFile("/etc/sysctl.d/62-l2dsr-nat.conf", fill("nat/lb-forward.conf")),)

    def web(self, spec: LabSpec, plan: AddressPlan, guest: Guest) -> RoleSetup:
        return RoleSetup(
            files=(WriteFile("/etc/sysctl.d/61-l2dsr-nat.conf", fill("nat/web-route.conf")),),
            net=(f"ip route replace {plan.front} via {plan.lb_server_address} dev eth0",),
        )


MODE = Nat()
