"""l3dsr (L3DSR): LVS/IPVS tunnelling (`ipvsadm -a ... -i`).

The LB wraps each request in IP-in-IP to the web's own address, so LB and webs need not share an L2
segment (here they do, but nothing relies on it). A web unwraps it on tunl0, which holds the VIP,
and replies to the client directly: responses bypass the LB as under L2DSR.
"""

from __future__ import annotations

from lab.addressing import AddressPlan, Guest
from lab.files import RoleSetup, WriteFile, fill
from lab.spec import LabSpec
from lbmodes.base import bypassing
from lbmodes.ipvs import IpvsMode


class L3dsr(IpvsMode):
    name = "l3dsr"
    title = "L3DSR (IPVS tunnelling)"
    order = 2
    forwarding = "-i"
    lb_rate_per_vcpu = 1400.0  # IPVS wraps the request, as cheap as dsr (the webs set the pace)
    shares = bypassing(
        "responses are not bypassing it, so the webs are not replying directly (tunl0 down or without the VIP?)"
    )

    def web(self, spec: LabSpec, plan: AddressPlan, guest: Guest) -> RoleSetup:
        return RoleSetup(
            modules=("ipip",),  # creates tunl0, the fallback device that takes any IP-in-IP packet
            files=(WriteFile("/etc/sysctl.d/61-l2dsr-l3dsr.conf", fill("l3dsr/web-tunnel.conf")),),
            net=(
                f"ip route replace {plan.front} dev eth0",
                "modprobe ipip",
                "ip link set tunl0 up",
                f"ip addr replace {plan.vip}/32 dev tunl0",
            ),
        )


MODE = L3dsr()
