"""proxy: HAProxy terminates the client's TCP and opens its own to a web (the seed's baseline).

Every response crosses the LB. The benchmark steps through HAProxy's thread counts (the seed's
nbthread 1-8) by re-rendering haproxy.cfg and reloading. With `l2dsr:https` the frontend also binds
:443 with the seed's self-signed certificate, and `l2dsr:benchScheme: https` benchmarks it.
"""

from __future__ import annotations

from lab.addressing import AddressPlan, Guest
from lab.files import Check, Retune, RoleSetup, WriteFile, fill
from lab.memory import mib
from lab.spec import LabSpec
from lab.tuning import cpu_range, tuning_of
from lbmodes.base import Mode, through, vip_on_lo_web

HAPROXY_CFG = "/etc/haproxy/haproxy.cfg"
STATS_SOCKET = "/run/haproxy/admin.sock"
# HAProxy 2.6, idle, with the seed's maxconn and ulimit-n: 36 MiB (measured); per thread a little
# more. Per connection (not measured at the seed's scale): session and two connections hold a few
# KiB, and a 16 KiB buffer (tune.bufsize) is taken only while data waits; assumed 8 KiB on average.
HAPROXY_BASE_MIB = 36
HAPROXY_THREAD_MIB = 2
HAPROXY_BYTES_PER_CONNECTION = 8192
HAPROXY_CERT = "/etc/haproxy/certs/server.pem"
SEED_CERT_SUBJECT = "/C=KR/ST=GeongGi/L=PhanGyo/O=Test/OU=CloudDev/CN={vip}"


def haproxy_mib(threads: int, connections: int) -> int:
    return HAPROXY_BASE_MIB + threads * HAPROXY_THREAD_MIB + mib(connections * HAPROXY_BYTES_PER_CONNECTION)


def cpu_list(spec: LabSpec) -> str:
    """HAProxy's cpu-map target: every vCPU of the LB (the seed mapped its threads onto all cores),
    or with the seed's tuning the isolated ones (its `taskset -c 0-3` onto isolated cores)."""
    tuning = tuning_of(spec.lb_tuning, spec.vcpus["lb"])
    return cpu_range(tuning.isolated) if tuning else cpu_range(list(range(spec.vcpus["lb"])))


def haproxy_cfg(spec: LabSpec, plan: AddressPlan, threads: int | None = None, cert: str = HAPROXY_CERT) -> str:
    """The seed's haproxy.cfg for this lab; `threads` overrides l2dsr:haproxyThreads (benchmark steps)."""
    servers = "\n".join(f"    server {w.name} {w.address}:80 check" for w in plan.webs)
    https = f"    bind {plan.vip}:443 ssl crt {cert}\n" if spec.https else ""
    return fill(
        "proxy/haproxy.cfg",
        nbthread=threads or spec.haproxy_threads,
        cpu_list=cpu_list(spec),
        vip=plan.vip,
        stats_socket=STATS_SOCKET,
        https_bind=https,
        servers=servers,
    )


class Proxy(Mode):
    name = "proxy"
    title = "proxy (HAProxy)"
    order = 0
    baseline = True
    shares = through("responses are bypassing the proxy")
    terminates_tls = True
    tunes_threads = True
    balances = "requests"  # HAProxy's roundrobin picks a server per request, kept-alive connection or not
    lb_rate_per_vcpu = 200.0  # one HAProxy thread on one vCPU: 181-203 req/s (the e2e's proxy rows)

    def lb_rate(self, spec: LabSpec, threads: int) -> float:
        return self.lb_rate_per_vcpu * min(threads, spec.vcpus["lb"])

    def lb(self, spec: LabSpec, plan: AddressPlan) -> RoleSetup:
        commands: tuple[str, ...] = ()
        if spec.https:
            subject = SEED_CERT_SUBJECT.format(vip=plan.vip)
            commands = (
                "mkdir -p /etc/haproxy/certs",
                "openssl req -x509 -nodes -newkey rsa:2048 -days 3650 -subj "
                f"'{subject}' -keyout /etc/haproxy/certs/server.key -out /etc/haproxy/certs/server.crt",
                f"cat /etc/haproxy/certs/server.crt /etc/haproxy/certs/server.key > {HAPROXY_CERT}",
                f"chmod 600 {HAPROXY_CERT}",
            )
        return RoleSetup(
            files=(
                WriteFile(HAPROXY_CFG, haproxy_cfg(spec, plan)),
                WriteFile("/etc/systemd/system/haproxy.service.d/l2dsr.conf", fill("proxy/haproxy.service.conf")),
            ),
            commands=commands,
            units=("haproxy.service",),
            packages=("haproxy", "openssl"),
        )

    def web(self, spec: LabSpec, plan: AddressPlan, guest: Guest) -> RoleSetup:
        # The same webs as dsr: a switch between the two replaces only the LB.
        return vip_on_lo_web(plan)

    def lb_memory(self, spec: LabSpec) -> tuple[str, int]:
        threads = max((spec.haproxy_threads, *spec.bench_threads))
        conns = spec.max_concurrency
        return f"HAProxy {threads} threads, {conns} connections", haproxy_mib(threads, conns)

    def lb_threads(self, spec: LabSpec) -> int:
        return spec.haproxy_threads

    def lb_steps(self, spec: LabSpec) -> tuple[int, ...]:
        return spec.bench_threads or (spec.haproxy_threads,)

    def lb_checks(self, spec: LabSpec, plan: AddressPlan) -> tuple[Check, ...]:
        servers = (
            f"echo 'show stat' | socat stdio {STATS_SOCKET} | awk -F, '$1 == \"web\" && $2 != \"BACKEND\" {{print $2}}'"
        )
        return (
            Check("HAProxy's servers", f"{servers} | xargs", " ".join(w.name for w in plan.webs)),
            Check(
                "HAProxy's threads", "ps -o nlwp= -C haproxy | sort -n | tail -1 | xargs", str(self.lb_threads(spec))
            ),
        )

    def rotation(self, spec: LabSpec) -> tuple[str, str]:
        # `show stat`'s CSV: field 2 the server, 8 its sessions so far, 18 its status (UP, UP 1/3
        # going down: still in; DOWN, DOWN 1/2 coming back, MAINT: out).
        return "HAProxy check", (
            f"echo 'show stat' | socat stdio {STATS_SOCKET} | "
            'awk -F, \'$1 == "web" && $2 != "BACKEND" {print $2, ($18 ~ /^UP/ ? 1 : 0), $8}\''
        )

    def retune(self, spec: LabSpec, plan: AddressPlan, threads: int) -> Retune:
        return Retune(
            files=(WriteFile(HAPROXY_CFG, haproxy_cfg(spec, plan, threads)),),
            apply=f"haproxy -c -q -f {HAPROXY_CFG} && systemctl reload haproxy",
            check="ps -o nlwp= -C haproxy",  # the worker's threads (the master has one)
            expect=str(threads),
        )


MODE = Proxy()
