"""The contract every load-balancer mode meets; the defaults are those of a mode with nothing to tune."""

from __future__ import annotations

from dataclasses import dataclass

from lab.addressing import AddressPlan, Guest
from lab.files import Check, Retune, RoleSetup, WriteFile, fill
from lab.spec import LabSpec


@dataclass(frozen=True)
class ShareRule:
    """Which share of the response bytes may cross the LB in this mode, and what a run outside it means.

    The share is (LB bytes sent - client bytes sent) / client bytes received over a run: about 0% when
    the webs reply to the clients directly, about 100% when every reply passes the LB.
    """

    low: float
    high: float
    expected: str  # "under 10%", "about 100%"
    otherwise: str  # what a run outside the bounds means, for the failure message


BYPASS = 0.10  # responses bypass the LB: at most this share crosses it
THROUGH = 0.80  # responses pass the LB: at least this share crosses it
UNBOUNDED = 1e9


def bypassing(otherwise: str) -> ShareRule:
    return ShareRule(-UNBOUNDED, BYPASS, f"under {BYPASS:.0%}", otherwise)


def through(otherwise: str) -> ShareRule:
    return ShareRule(THROUGH, UNBOUNDED, "about 100%", otherwise)


class Mode:
    """One way to balance the webs. Subclasses set the class attributes and override what differs."""

    name: str
    title: str  # for tables and figures
    order: int  # where it sorts in listings and reports (proxy, the baseline, first)
    baseline: bool = False  # the mode every other is compared with in the report (proxy)
    shares: ShareRule
    terminates_tls: bool = False  # can the benchmark use https:// against the VIP?
    tunes_threads: bool = False  # does the LB run a thread count the benchmark steps through?
    # What the LB's scheduler spreads over the webs, so what the benchmark judges the balance by:
    # "connections" (IPVS picks a web per connection) or "requests" (a proxy picks one per request).
    balances: str = "connections"
    # Requests/s one LB vCPU forwards under software emulation (measured on the lab stack, 5 KiB, no
    # keep-alive), for the benchmark's cost estimate at preview (bench/cost.py).
    lb_rate_per_vcpu: float

    def lb(self, spec: LabSpec, plan: AddressPlan) -> RoleSetup:
        raise NotImplementedError

    def web(self, spec: LabSpec, plan: AddressPlan, guest: Guest) -> RoleSetup:
        raise NotImplementedError

    def lb_memory(self, spec: LabSpec) -> tuple[str, int]:
        """(what, MiB) the LB's work takes beyond the OS, for lab/memory.py's estimate (the figures are the mode's)."""
        raise NotImplementedError

    def lb_threads(self, spec: LabSpec) -> int:
        """The LB's thread count as deployed (what the benchmark returns it to)."""
        return 1

    def lb_rate(self, spec: LabSpec, threads: int) -> float:
        """Requests/s the LB forwards under emulation with `threads` (IPVS: the kernel, every vCPU)."""
        return self.lb_rate_per_vcpu * spec.vcpus["lb"]

    def lb_steps(self, spec: LabSpec) -> tuple[int, ...]:
        """The LB thread counts the benchmark steps through; a mode with nothing to tune reports one
        row per point, as the seed did for IPVS (the kernel's, one 'thread')."""
        return (1,)

    def lb_checks(self, spec: LabSpec, plan: AddressPlan) -> tuple[Check, ...]:
        """What the LB's balancer must show while it runs as deployed (its service, its webs); the
        drift a preview reports for the LB, beside its units and sysctls (guest/state.py)."""
        return ()

    def rotation(self, spec: LabSpec) -> tuple[str, str]:
        """(what checks the webs, a command on the LB): the command prints a line per web the LB
        balances over, `<web's address or name> <1: in rotation, 0: out> <connections or sessions
        it has sent that web so far>`; a web it prints nothing for is out. The fault run samples it."""
        raise NotImplementedError

    def retune(self, spec: LabSpec, plan: AddressPlan, threads: int) -> Retune | None:
        """What the benchmark does to run a step with `threads`; None: nothing to change."""
        return None


# ---- what several modes share --------------------------------------------------------------------


def vip_on_lo_web(plan: AddressPlan) -> RoleSetup:
    """A web that holds the VIP on lo without answering ARP for it, and reaches the clients on-link:
    it can reply to a client directly, with the VIP as source (L2DSR's web; harmless behind a proxy)."""
    return RoleSetup(
        files=(WriteFile("/etc/sysctl.d/61-l2dsr-dsr-arp.conf", fill("web/vip-arp.conf")),),
        net=(f"ip route replace {plan.front} dev eth0", f"ip addr replace {plan.vip}/32 dev lo"),
    )
