"""dsr (L2DSR): LVS/IPVS direct routing, as in the seed.

The LB only rewrites the destination MAC (`ipvsadm -a ... -g`); the webs hold the VIP on lo without
answering ARP for it and reply to the client directly, so responses never cross the LB.
"""

from __future__ import annotations

from lab.addressing import AddressPlan, Guest
from lab.files import RoleSetup
from lab.spec import LabSpec
from lbmodes.base import bypassing, vip_on_lo_web
from lbmodes.ipvs import IpvsMode


class Dsr(IpvsMode):
    name = "dsr"
    title = "L2DSR (IPVS direct routing)"
    order = 1
    forwarding = "-g"
    lb_rate_per_vcpu = 1400.0  # IPVS rewrites a MAC: 325 req/s at 23% of one vCPU (two clients, 2 webs)
    shares = bypassing("responses are not bypassing it, so this is not direct server return")

    def web(self, spec: LabSpec, plan: AddressPlan, guest: Guest) -> RoleSetup:
        return vip_on_lo_web(plan)


MODE = Dsr()
