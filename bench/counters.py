"""What the benchmark reads on each VM around a run: CPU, eth0's bytes and drops, TCP listen drops,
and nginx's counts of served requests and accepted connections. One SSH command per VM; the parsing is pure."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from runtime.ssh import Ssh, SshError
from runtime.vm import VmRef

SNAPSHOT = (
    "head -1 /proc/stat; cd /sys/class/net/eth0/statistics && cat rx_bytes tx_bytes rx_dropped tx_dropped; "
    "nstat -asz TcpExtListenDrops TcpExtListenOverflows 2>/dev/null | awk '/^TcpExt/ {print $2}'"
)
BYTES = ("rx_bytes", "tx_bytes")


def parse_snapshot(text: str) -> dict[str, int]:
    """/proc/stat's cpu line, eth0's byte and drop counters, and TCP listen drops/overflows."""
    lines = text.split("\n")
    cpu = [int(v) for v in lines[0].split()[1:9]]
    values = [int(v) for v in lines[1:] if v.strip()]
    return {
        "cpu_total": sum(cpu),
        "cpu_idle": cpu[3] + cpu[4],
        "rx_bytes": values[0],
        "tx_bytes": values[1],
        "rx_dropped": values[2],
        "tx_dropped": values[3],
        "listen_drops": values[4] if len(values) > 4 else 0,
        "listen_overflows": values[5] if len(values) > 5 else 0,
    }


def snapshot(ssh: Ssh, vm: VmRef) -> dict[str, int]:
    return parse_snapshot(ssh.run(vm.address, SNAPSHOT).stdout)


def snapshots(ssh: Ssh, vms: list[VmRef]) -> dict[str, dict[str, int]]:
    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(zip([v.name for v in vms], pool.map(lambda v: snapshot(ssh, v), vms), strict=True))


def busy(after: dict[str, int], before: dict[str, int]) -> float:
    total = after["cpu_total"] - before["cpu_total"]
    return round(1 - (after["cpu_idle"] - before["cpu_idle"]) / total, 3) if total > 0 else 0.0


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in after}


def bytes_of(items: list[dict[str, int]]) -> dict[str, int]:
    """The byte counters of several VMs, summed."""
    return {k: sum(i[k] for i in items) for k in BYTES}


SERVED = "sudo grep -c ' /dummy_file ' /var/log/nginx/access.log || true"
# nginx's stub_status (cloudinit/web/l2dsr-status.conf): "server accepts handled requests" then the numbers.
ACCEPTED = "curl -s --max-time 10 http://127.0.0.1/l2dsr-status | awk 'NR == 3 {print $1}'"


def served(ssh: Ssh, web: VmRef) -> int:
    """Requests for /dummy_file in the web's access log (nginx's `main` format)."""
    return int(ssh.run(web.address, SERVED).stdout.strip() or 0)


@dataclass(frozen=True)
class WebCounts:
    requests: int  # /dummy_file in the access log
    accepted: int  # connections nginx accepted, this reading's own included

    def since(self, before: WebCounts) -> WebCounts:
        """What a run added: the reading's own connection (one per reading) taken off."""
        return WebCounts(self.requests - before.requests, self.accepted - before.accepted - 1)


def web_counts(ssh: Ssh, web: VmRef) -> WebCounts:
    command = f"{SERVED}; {ACCEPTED}"
    done = ssh.run(web.address, command)
    out = done.stdout.split()
    if len(out) != 2 or not all(v.isdigit() for v in out):
        outcome = "it printed no request and connection counts (is nginx running, with l2dsr-status.conf?)"
        raise SshError(f"{web.address}: {outcome}", web.address, command, outcome, done.stdout + done.stderr)
    return WebCounts(int(out[0]), int(out[1]))


def webs_counts(ssh: Ssh, webs: list[VmRef]) -> dict[str, WebCounts]:
    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(zip([w.name for w in webs], pool.map(lambda w: web_counts(ssh, w), webs), strict=True))
