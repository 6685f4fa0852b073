"""Everything that goes into a VM, rendered by plain Python from the real config files in cloudinit/.

Templates are the files a human diffs against the seed, with `{{name}}` holes; pyyaml emits the
cloud-config. A role's user-data is a pure function of the spec, the load-balancer mode (the object,
resolved once by lbmodes.load_lab), the address plan and the SSH key, so a change to any of them
changes the seed disk's content, and that replaces the VM.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import yaml

from lab.addressing import AddressPlan, Guest, mac_address
from lab.files import RoleSetup, WriteFile, fill
from lab.spec import LabSpec
from lab.tuning import TXQUEUELEN, LbTuning, tuning_of
from lbmodes import Mode
from loadtools import TOOLS

LOGIN_USER = "lab"
NGINX_ROOT = "/usr/share/nginx/html"
STATUS_CONF = "/etc/nginx/default.d/l2dsr-status.conf"  # included by the seed's server block

# Role packages for images that do not have them (a cloud image URL); the builtin image has all.
# The LB's come from its mode (lbmodes/), the clients' from the load tools (loadtools/: every tool the
# family has, so switching benchTool does not replace the clients).
PACKAGES = {
    "debian": {
        "common": ["iproute2", "ethtool", "curl"],
        "web": ["nginx"],
    },
    "rhel": {
        "common": ["iproute", "ethtool", "curl"],
        "web": ["nginx"],
    },
}
NGINX_PATHS = {
    "debian": {"nginx_user": "www-data", "nginx_modules": "/etc/nginx/modules-enabled/*.conf"},
    "rhel": {"nginx_user": "nginx", "nginx_modules": "/usr/share/nginx/modules/*.conf"},
}

# ---- the files ---------------------------------------------------------------------------------


def sysctl_profile(role: str) -> str:
    return fill("sysctl/client.conf" if role == "client" else "sysctl/server.conf")


def nginx_conf(spec: LabSpec) -> str:
    return fill("web/nginx.conf", **NGINX_PATHS[spec.image_family])


def net_script(lines: tuple[str, ...]) -> str:
    return fill("common/l2dsr-net", lines="\n".join(lines))


def start_units(units: list[str]) -> list[str]:
    """Start a role's services once, after their files and addresses exist.

    The builtin image ships the packages' role services masked (role_units in runtime/builtin-image.yaml), so
    nothing of any role starts at boot by itself; a VM unmasks and starts exactly its own (the lab's
    own `l2dsr-*` units are never masked). Enabled, so a reboot brings the same services back, after
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


def with_tuning(setup: RoleSetup, tuning: LbTuning | None) -> RoleSetup:
    """The LB's part in its mode (it holds both subnets and the VIP on eth0 itself), and the seed's
    tuning when asked: its sysctls, and a unit that pins the queues' interrupts before the balancer."""
    if tuning is None:
        return setup
    pins = "\n".join(
        f"pin {kind}.{q} {tuning.irq_cpu(q)}" for q in range(tuning.queues) for kind in ("input", "output")
    )
    return replace(
        setup,
        files=(
            *setup.files,
            WriteFile("/etc/sysctl.d/62-l2dsr-lb-tuning.conf", tuning.sysctl_conf()),
            WriteFile(
                "/usr/local/sbin/l2dsr-tune", fill("tuning/l2dsr-tune", txqueuelen=TXQUEUELEN, pins=pins), "0755"
            ),
            WriteFile("/etc/systemd/system/l2dsr-tune.service", fill("tuning/l2dsr-tune.service")),
        ),
        units=("l2dsr-tune.service", *setup.units),
    )


def role_setup(spec: LabSpec, mode: Mode, plan: AddressPlan, guest: Guest) -> RoleSetup:
    """What a VM's role needs; the load-balancer mode decides the LB's and the webs' part."""
    if guest.role == "lb":
        return with_tuning(mode.lb(spec, plan), tuning_of(spec.lb_tuning, spec.vcpus["lb"]))
    if guest.role == "web":
        part = mode.web(spec, plan, guest)
        size = spec.bench_file_size_kib * 1024
        return replace(
            part,
            files=(
                *part.files,
                WriteFile("/etc/nginx/nginx.conf", nginx_conf(spec)),
                WriteFile(STATUS_CONF, fill("web/l2dsr-status.conf")),
            ),
            commands=(
                *part.commands,
                f"mkdir -p {NGINX_ROOT}",
                f"head -c {size} /dev/zero | tr '\\0' x > {NGINX_ROOT}/dummy_file",
            ),
            units=(*part.units, "nginx.service"),
        )
    return RoleSetup(net=(f"ip route replace {plan.server} dev eth0",))  # a client reaches the webs on-link


# ---- cloud-init documents ----------------------------------------------------------------------


def role_files(spec: LabSpec, mode: Mode, plan: AddressPlan, guest: Guest) -> tuple[list[WriteFile], list[str]]:
    """The files and commands of one VM's role, in the order cloud-init applies them.

    The commands run as one shell script that stops at the first failure (`set -e`), so a role that
    cannot start its service ends cloud-init in `status: error` with the failing command in
    /var/log/cloud-init-output.log (`-x` traces each command there).
    """
    setup = role_setup(spec, mode, plan, guest)
    profile = "client" if guest.role == "client" else "server"
    modules = ("nf_conntrack", *setup.modules)
    files = [
        WriteFile(f"/etc/sysctl.d/60-l2dsr-{profile}.conf", sysctl_profile(guest.role)),
        WriteFile("/etc/modules-load.d/l2dsr.conf", "".join(f"{m}\n" for m in modules)),
    ]
    units: list[str] = []
    if setup.net:
        files += [
            WriteFile("/usr/local/sbin/l2dsr-net", net_script(setup.net), "0755"),
            WriteFile("/etc/systemd/system/l2dsr-net.service", fill("common/l2dsr-net.service")),
        ]
        units.append("l2dsr-net.service")
    files += setup.files
    # Modules first: some sysctls name the devices they create (tunl0). systemd's sysctl, not
    # procps' `sysctl --system`: it honours the '-' of the seed's lines the kernel refuses, and
    # fails on anything else.
    commands = ["set -eux", f"modprobe -a {' '.join(modules)}", "systemctl restart systemd-sysctl.service"]
    commands += setup.commands
    units += setup.units
    commands += start_units(units)
    return files, commands


def final_message(guest: Guest) -> str:
    """What cloud-init prints on the console when it is done (followed by the uptime): readiness looks for it."""
    return f"l2dsr {guest.name} ({guest.role}) ready after"


def role_packages(spec: LabSpec, mode: Mode, plan: AddressPlan, guest: Guest) -> list[str]:
    if spec.image_is_builtin:
        return []
    family = PACKAGES[spec.image_family]
    tools = [p for t in TOOLS.values() for p in t.packages.get(spec.image_family, ())] if guest.role == "client" else []
    return family["common"] + family.get(guest.role, []) + tools + list(role_setup(spec, mode, plan, guest).packages)


def user_data(spec: LabSpec, mode: Mode, plan: AddressPlan, guest: Guest, ssh_public_key: str) -> str:
    files, commands = role_files(spec, mode, plan, guest)
    doc: dict[str, object] = {
        "hostname": guest.name,
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
        "final_message": f"{final_message(guest)} $UPTIME s",
    }
    packages = role_packages(spec, mode, plan, guest)
    if packages:
        doc["packages"] = packages
    return "#cloud-config\n" + yaml.safe_dump(doc, sort_keys=False, width=200)


def network_config(plan: AddressPlan, guest: Guest, mtu: int = 0) -> str:
    """eth0's addresses; its MTU only when the segment is narrower than Ethernet's (across hosts, virt/tunnel.py)."""
    net = plan.front if guest.address in plan.front else plan.server
    addresses = [f"{guest.address}/{net.prefixlen}", *(str(i) for i in guest.extra)]
    doc = {
        "version": 2,
        "ethernets": {
            "eth0": {
                # Matched by MAC and renamed, so cloud images with predictable names work too.
                "match": {"macaddress": mac_address(guest)},
                "set-name": "eth0",
                "addresses": addresses,
                **({"mtu": mtu} if mtu else {}),
            }
        },
    }
    return yaml.safe_dump(doc, sort_keys=False)


def meta_data(domain_name: str, guest: Guest, user_data_text: str, network_config_text: str) -> str:
    """A new instance-id whenever the content changes, so cloud-init runs again on a new disk."""
    digest = hashlib.sha256((user_data_text + network_config_text).encode()).hexdigest()[:12]
    return yaml.safe_dump({"instance-id": f"{domain_name}-{digest}", "local-hostname": guest.name})
