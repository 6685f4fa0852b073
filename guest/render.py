"""Everything that goes into a VM, rendered by plain Python from the real config files beside this.

Templates are the files a human diffs against the seed, with `{{name}}` holes; pyyaml emits the
cloud-config. A role's user-data is a pure function of the spec, the address plan and the SSH key,
so a change to any of them changes the seed disk's content, and that replaces the VM.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from lab.addressing import AddressPlan, Guest
from lab.config import LabSpec

TEMPLATES = Path(__file__).resolve().parent.parent / "cloudinit"  # the real config files, with holes
LOGIN_USER = "lab"
NGINX_ROOT = "/usr/share/nginx/html"
HAPROXY_CERT = "/etc/haproxy/certs/server.pem"
SEED_CERT_SUBJECT = "/C=KR/ST=GeongGi/L=PhanGyo/O=Test/OU=CloudDev/CN={vip}"

# Role packages for images that do not have them (a cloud image URL); the builtin image has all.
PACKAGES = {
    "debian": {
        "common": ["iproute2", "ethtool", "curl"],
        "web": ["nginx"],
        "client": ["apache2-utils", "wrk"],
        "proxy": ["haproxy", "openssl"],
        "dsr": ["ipvsadm"],
    },
    "rhel": {
        "common": ["iproute", "ethtool", "curl"],
        "web": ["nginx"],
        "client": ["httpd-tools"],
        "proxy": ["haproxy", "openssl"],
        "dsr": ["ipvsadm"],
    },
}
NGINX_PATHS = {
    "debian": {"nginx_user": "www-data", "nginx_modules": "/etc/nginx/modules-enabled/*.conf"},
    "rhel": {"nginx_user": "nginx", "nginx_modules": "/usr/share/nginx/modules/*.conf"},
}

_HOLE = re.compile(r"\{\{(\w+)\}\}")


def fill(template: str, **values: object) -> str:
    """Fill `{{name}}` holes in cloudinit/<template>; a missing or unused value is a bug, not a blank."""
    text = (TEMPLATES / template).read_text()
    holes = set(_HOLE.findall(text))
    if holes != set(values):
        raise KeyError(f"{template}: holes {sorted(holes)} but values {sorted(values)}")
    return _HOLE.sub(lambda m: str(values[m.group(1)]), text)


# ---- the files ---------------------------------------------------------------------------------


def sysctl_profile(role: str) -> str:
    return fill("sysctl/client.conf" if role == "client" else "sysctl/server.conf")


def nginx_conf(spec: LabSpec) -> str:
    return fill("web/nginx.conf", **NGINX_PATHS[spec.image_family])


def cpu_list(cpus: int) -> str:
    """HAProxy's cpu-map target: every vCPU of the LB (the seed mapped its threads onto all cores)."""
    return "0" if cpus == 1 else f"0-{cpus - 1}"


def haproxy_cfg(spec: LabSpec, plan: AddressPlan, cert: str = HAPROXY_CERT) -> str:
    servers = "\n".join(f"    server {w.name} {w.address}:80 check" for w in plan.webs)
    https = f"    bind {plan.vip}:443 ssl crt {cert}\n" if spec.https else ""
    return fill(
        "lb/haproxy.cfg",
        nbthread=spec.haproxy_threads,
        cpu_list=cpu_list(spec.vcpus["lb"]),
        vip=plan.vip,
        https_bind=https,
        servers=servers,
    )


def ipvsadm_rules(spec: LabSpec, plan: AddressPlan) -> str:
    real = "\n".join(
        f"-a -t {plan.vip}:80 -r {w.address}:80 -g -x {spec.ipvs_upper_threshold} -y {spec.ipvs_lower_threshold}"
        for w in plan.webs
    )
    return fill("lb/ipvsadm.rules", vip=plan.vip, real_servers=real)


def net_script(plan: AddressPlan, host: Guest) -> str:
    other = plan.server if host.address in plan.front else plan.front
    vip = f"ip addr replace {plan.vip}/32 dev lo" if host.role == "web" else ""
    return fill("common/l2dsr-net", onlink_subnet=other, vip_on_lo=vip)


# ---- the load-balancer modes: one contract, one entry per mode ------------------------------------


@dataclass(frozen=True)
class WriteFile:
    path: str
    content: str
    permissions: str = "0644"

    def as_cloud_config(self) -> dict[str, str]:
        return {"path": self.path, "content": self.content, "permissions": self.permissions}


@dataclass(frozen=True)
class LbSetup:
    files: list[WriteFile]
    commands: list[str]  # run after the files are written, before the units start
    units: list[str]  # started once, last, under systemd


def start_units(units: list[str]) -> list[str]:
    """Start a role's services once, after their files and addresses exist.

    The builtin image ships the packages' role services masked (hypervisor/image.py ROLE_UNITS), so nothing
    of any role starts at boot by itself; a VM unmasks and starts exactly its own (the lab's own
    `l2dsr-*` units are never masked). Enabled, so a reboot brings the same services back, after
    network-online.
    Every `systemctl enable` or `unmask` reloads systemd, and each reload takes seconds of an emulated
    CPU: so no reloads but one, and no SysV links (the packages' init scripts are not used).
    """
    packaged = [u for u in units if not u.startswith("l2dsr-")]
    commands = [f"systemctl --no-reload unmask {' '.join(packaged)}"] if packaged else []
    if units:
        commands += [
            f"SYSTEMCTL_SKIP_SYSV=1 systemctl --no-reload enable {' '.join(units)}",
            "systemctl daemon-reload",
            f"systemctl start {' '.join(units)}",
        ]
    return commands


def proxy_lb(spec: LabSpec, plan: AddressPlan) -> LbSetup:
    commands = []
    if spec.https:
        subject = SEED_CERT_SUBJECT.format(vip=plan.vip)
        commands += [
            "mkdir -p /etc/haproxy/certs",
            "openssl req -x509 -nodes -newkey rsa:2048 -days 3650 -subj "
            f"'{subject}' -keyout /etc/haproxy/certs/server.key -out /etc/haproxy/certs/server.crt",
            f"cat /etc/haproxy/certs/server.crt /etc/haproxy/certs/server.key > {HAPROXY_CERT}",
            f"chmod 600 {HAPROXY_CERT}",
        ]
    files = [
        WriteFile("/etc/haproxy/haproxy.cfg", haproxy_cfg(spec, plan)),
        WriteFile("/etc/systemd/system/haproxy.service.d/l2dsr.conf", fill("lb/haproxy.service.conf")),
    ]
    return LbSetup(files, commands, ["haproxy.service"])


def dsr_lb(spec: LabSpec, plan: AddressPlan) -> LbSetup:
    return LbSetup(
        [
            WriteFile("/etc/modules-load.d/l2dsr-ipvs.conf", "ip_vs\nip_vs_rr\n"),
            WriteFile("/etc/l2dsr/ipvsadm.rules", ipvsadm_rules(spec, plan)),
            WriteFile("/etc/systemd/system/l2dsr-ipvs.service", fill("lb/l2dsr-ipvs.service")),
        ],
        [],
        ["l2dsr-ipvs.service"],
    )


LB_MODES = {"proxy": proxy_lb, "dsr": dsr_lb}


# ---- cloud-init documents ----------------------------------------------------------------------


def role_files(spec: LabSpec, plan: AddressPlan, host: Guest) -> tuple[list[WriteFile], list[str]]:
    """The files and commands of one VM's role, in the order cloud-init applies them.

    The commands run as one shell script that stops at the first failure (`set -e`), so a role that
    cannot start its service ends cloud-init in `status: error` with the failing command in
    /var/log/cloud-init-output.log (`-x` traces each command there).
    """
    profile = "client" if host.role == "client" else "server"
    files = [
        WriteFile(f"/etc/sysctl.d/60-l2dsr-{profile}.conf", sysctl_profile(host.role)),
        WriteFile("/etc/modules-load.d/l2dsr-conntrack.conf", "nf_conntrack\n"),
    ]
    commands = ["set -eux", "modprobe nf_conntrack"]
    units: list[str] = []
    if host.role != "lb":  # the LB holds both subnets and the VIP on eth0 itself
        files += [
            WriteFile("/usr/local/sbin/l2dsr-net", net_script(plan, host), "0755"),
            WriteFile("/etc/systemd/system/l2dsr-net.service", fill("common/l2dsr-net.service")),
        ]
        units.append("l2dsr-net.service")
    if host.role == "web":
        files += [
            WriteFile("/etc/sysctl.d/61-l2dsr-dsr-arp.conf", fill("web/dsr-arp.conf")),
            WriteFile("/etc/nginx/nginx.conf", nginx_conf(spec)),
        ]
    # systemd's sysctl, not procps' `sysctl --system`: it honours the '-' of the seed's lines the
    # kernel refuses, and fails on anything else.
    commands.append("systemctl restart systemd-sysctl.service")
    if host.role == "web":
        size = spec.bench_file_size_kib * 1024
        commands += [f"mkdir -p {NGINX_ROOT}", f"head -c {size} /dev/zero | tr '\\0' x > {NGINX_ROOT}/dummy_file"]
        units.append("nginx.service")
    if host.role == "lb":
        setup = LB_MODES[spec.mode](spec, plan)
        files += setup.files
        commands += setup.commands
        units += setup.units
    commands += start_units(units)
    return files, commands


def final_message(host: Guest) -> str:
    """What cloud-init prints on the console when it is done (followed by the uptime): readiness looks for it."""
    return f"l2dsr {host.name} ({host.role}) ready after"


def role_packages(spec: LabSpec, host: Guest) -> list[str]:
    if spec.image_is_builtin:
        return []
    family = PACKAGES[spec.image_family]
    role = spec.mode if host.role == "lb" else host.role
    return family["common"] + family[role]


def user_data(spec: LabSpec, plan: AddressPlan, host: Guest, ssh_public_key: str) -> str:
    files, commands = role_files(spec, plan, host)
    doc: dict[str, object] = {
        "hostname": host.name,
        "manage_etc_hosts": True,
        "locale": "C.UTF-8",
        "users": [
            {
                "name": LOGIN_USER,
                "shell": "/bin/bash",
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "lock_passwd": True,
                "ssh_authorized_keys": [ssh_public_key.strip()],
            }
        ],
        "disable_root": True,
        "ssh_pwauth": False,
        "ssh_genkeytypes": ["ed25519"],
        "package_update": False,
        "package_upgrade": False,
        "write_files": [f.as_cloud_config() for f in files],
        "runcmd": commands,
        "final_message": f"{final_message(host)} $UPTIME s",
    }
    packages = role_packages(spec, host)
    if packages:
        doc["packages"] = packages
    return "#cloud-config\n" + yaml.safe_dump(doc, sort_keys=False, width=200)


def mac_address(host: Guest) -> str:
    """A stable MAC from the primary address (52:54:00 is QEMU's prefix): replacements keep it."""
    a, b, c, d = host.address.packed
    return f"52:54:00:{b ^ a:02x}:{c:02x}:{d:02x}"


def network_config(plan: AddressPlan, host: Guest) -> str:
    net = plan.front if host.address in plan.front else plan.server
    addresses = [f"{host.address}/{net.prefixlen}", *(str(i) for i in host.extra)]
    doc = {
        "version": 2,
        "ethernets": {
            "eth0": {
                # Matched by MAC and renamed, so cloud images with predictable names work too.
                "match": {"macaddress": mac_address(host)},
                "set-name": "eth0",
                "addresses": addresses,
            }
        },
    }
    return yaml.safe_dump(doc, sort_keys=False)


def meta_data(domain_name: str, host: Guest, user_data_text: str, network_config_text: str) -> str:
    """A new instance-id whenever the content changes, so cloud-init runs again on a new disk."""
    digest = hashlib.sha256((user_data_text + network_config_text).encode()).hexdigest()[:12]
    return yaml.safe_dump({"instance-id": f"{domain_name}-{digest}", "local-hostname": host.name})
