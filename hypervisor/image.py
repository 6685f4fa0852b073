"""The offline base image: Debian bookworm by debootstrap, every role's packages baked in.

Guests here cannot download anything, so cloud-init only configures. The image is named by a hash
of everything that goes into it (`image_key`) and never rebuilt in place: overlays of running VMs
keep pointing at the old file while a new recipe builds a new one beside it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hypervisor import paths
from hypervisor.progress import StepFailed, run_logged, say

# What every role runs (nginx on webs; haproxy or ipvsadm on the LB; ab and wrk on clients), what
# the benchmark reads counters with (iproute2's ss and nstat, ethtool, procps), and what boots.
PACKAGES = [
    "linux-image-amd64",
    "initramfs-tools",
    "systemd-sysv",
    "udev",
    "kmod",
    "dbus",
    "iproute2",
    "ifupdown",
    "isc-dhcp-client",
    "iputils-ping",
    "procps",
    "netbase",
    "sudo",
    "python3",
    "python3-cffi-backend",
    "cloud-init",
    "openssh-server",
    "nginx",
    "haproxy",
    "ipvsadm",
    "apache2-utils",
    "wrk",
    "curl",
    "openssl",
    "tcpdump",
    "ethtool",
    "qemu-guest-agent",
    "ca-certificates",
    "sysstat",
]

# Files written into the root file system after debootstrap (no chroot, no network needed).
# Clone safety: empty machine-id, no SSH host keys. Boot speed: NoCloud only, no apt timers.
ROOTFS_FILES = {
    "etc/fstab": "LABEL=root / ext4 defaults,noatime 0 1\n",
    "etc/hostname": "localhost\n",
    "etc/machine-id": "",
    "etc/default/locale": "LANG=C.UTF-8\n",
    "etc/network/interfaces": "auto lo\niface lo inet loopback\n\nsource /etc/network/interfaces.d/*\n",
    "etc/cloud/cloud.cfg.d/90-l2dsr-datasource.cfg": "datasource_list: [NoCloud, None]\n",
    # Only the cloud-init modules the lab's user-data uses (guest/render.py): each module is a
    # Python import and often a subprocess, seconds under emulation. Measured, one guest alone:
    # grub-dpkg 1.4 s, set-passwords 2.4 s (its sshd setting is in the image instead),
    # keys-to-console 1.0 s, apt-configure 0.5 s, resizefs 0.4 s (the overlay has the base's size).
    # The config stage's two (locale, and runcmd, which only writes the script that scripts-user
    # runs in the final stage) run in the init stage instead, and cloud-config.service is masked:
    # a stage is one more Python start-up with cloud-init's imports (3.2 s with a warm page cache,
    # under emulation) for nothing.
    "etc/cloud/cloud.cfg.d/91-l2dsr-modules.cfg": (
        "cloud_init_modules: [migrator, seed_random, write-files, set_hostname, update_hostname,"
        " update_etc_hosts, users-groups, ssh, locale, runcmd]\n"
        "cloud_config_modules: []\n"
        "cloud_final_modules: [package-update-upgrade-install, scripts-per-once, scripts-per-boot,"
        " scripts-per-instance, scripts-user, final-message]\n"
    ),
    # The guests' disk is virtio and ext4 (virt/xml.py): an initramfs with only those (and what they
    # need) instead of Debian's MODULES=most, 36 MB that every boot unpacks and probes under emulation.
    "etc/initramfs-tools/conf.d/90-l2dsr.conf": "MODULES=list\n",
    "etc/initramfs-tools/modules": "virtio_pci\nvirtio_blk\next4\n",
    "etc/ssh/sshd_config.d/50-l2dsr.conf": "PasswordAuthentication no\nKbdInteractiveAuthentication no\n",
}
# Nothing a lab guest needs, each a process at boot (~0.3 CPU-s each under emulation) or a timer
# that may fire during a benchmark: sysstat's boot record (its tools stay), binfmt, modules and
# file systems for hardware and debugging the guests do not have or use, maintenance timers.
MASKED_UNITS = (
    "cloud-config.service",
    "e2scrub_reap.service",
    "e2scrub_all.timer",
    "fstrim.timer",
    "dpkg-db-backup.timer",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "sysstat.service",
    "systemd-binfmt.service",
    "modprobe@drm.service",
    "modprobe@efi_pstore.service",
    "modprobe@loop.service",
    "modprobe@dm_mod.service",
    "modprobe@fuse.service",
    "sys-fs-fuse-connections.mount",
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    "dev-hugepages.mount",
)
# systemd generators for disks and boot paths the guests do not have (encrypted, verity, GPT
# auto-mount, hibernation, offline updates, debug shells): each runs at boot and at every
# `daemon-reload` (one per boot, guest/render.py), ~0.25 CPU-s each under emulation; measured,
# the reload took 4.2 s with them.
MASKED_GENERATORS = (
    "systemd-cryptsetup-generator",
    "systemd-integritysetup-generator",
    "systemd-veritysetup-generator",
    "systemd-gpt-auto-generator",
    "systemd-hibernate-resume-generator",
    "systemd-system-update-generator",
    "systemd-debug-generator",
    "systemd-run-generator",
)
# Every role's services ship masked: no boot of any VM starts them by itself, whatever enables them
# (package postinst links, the SysV scripts nginx/haproxy/ipvsadm also install, first-boot
# `preset-all` with an empty machine-id). A VM's cloud-init unmasks and starts its own role's units
# once their files exist (guest/render.py start_units). `ipvsadm.service` is the unit systemd
# generates from Debian's SysV script; the lab's LB uses its own l2dsr-ipvs.service instead.
ROLE_UNITS = ("nginx.service", "haproxy.service", "ipvsadm.service")

KERNEL_CMDLINE = "root=/dev/vda rw console=ttyS0,115200 net.ifnames=0 ds=nocloud"


@dataclass(frozen=True)
class Recipe:
    suite: str = "bookworm"
    mirror: str = "http://deb.debian.org/debian"
    packages: tuple[str, ...] = tuple(PACKAGES)
    files: dict[str, str] = field(default_factory=lambda: dict(ROOTFS_FILES))
    masked: tuple[str, ...] = MASKED_UNITS
    masked_generators: tuple[str, ...] = MASKED_GENERATORS
    role_units: tuple[str, ...] = ROLE_UNITS
    disk_size: str = "4G"
    builder_version: int = 3  # bump when the build steps change in a way the fields do not show


def image_key(recipe: Recipe) -> str:
    """Content key of an image: same inputs, same key; any change, a new image beside the old."""
    blob = json.dumps(asdict(recipe), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True)
class BuiltImage:
    directory: Path

    @property
    def disk(self) -> Path:
        return self.directory / "base.qcow2"

    @property
    def kernel(self) -> Path:
        return self.directory / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.directory / "initrd.img"

    def exists(self) -> bool:
        return all(p.is_file() for p in (self.disk, self.kernel, self.initrd))


def builtin_image(recipe: Recipe | None = None) -> BuiltImage:
    recipe = recipe or Recipe()
    return BuiltImage(paths.cache_dir() / "images" / f"debian-{recipe.suite}-{image_key(recipe)}")


def build(recipe: Recipe | None = None) -> BuiltImage:
    """Build the image unless an image with the same key exists; returns where it is."""
    recipe = recipe or Recipe()
    image = builtin_image(recipe)
    if image.exists():
        say(f"base image {image.directory.name}: cached")
        return image
    with paths.build_lock(image.directory.name):
        if image.exists():  # built by another ./labctl while this one waited
            return image
        return _build(recipe, image)


def _build(recipe: Recipe, image: BuiltImage) -> BuiltImage:
    image.directory.parent.mkdir(parents=True, exist_ok=True)
    log = image.directory.parent / f"{image.directory.name}.log"
    work = Path(tempfile.mkdtemp(prefix=f".{image.directory.name}-", dir=image.directory.parent))
    try:
        rootfs = work / "rootfs"
        run_logged(
            f"debootstrap {recipe.suite} with {len(recipe.packages)} packages",
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(recipe.packages)}",
                recipe.suite,
                str(rootfs),
                recipe.mirror,
            ],
            log,
        )
        _customise(rootfs, recipe)
        run_logged(
            "initramfs with the guests' disk drivers only",
            ["chroot", str(rootfs), "update-initramfs", "-u", "-k", "all"],
            log,
        )
        started = units_started_at_boot(rootfs, recipe.role_units)
        if started:
            raise StepFailed(f"the built image would start role services at boot: {'; '.join(started)}")
        shutil.copy(_newest(rootfs / "boot", "vmlinuz-"), work / "vmlinuz")
        shutil.copy(_newest(rootfs / "boot", "initrd.img-"), work / "initrd.img")
        raw = work / "root.raw"
        with raw.open("wb") as f:
            f.truncate(_bytes(recipe.disk_size))
        run_logged("mkfs.ext4 from the rootfs", ["mkfs.ext4", "-q", "-L", "root", "-d", str(rootfs), str(raw)], log)
        run_logged("convert to qcow2", ["qemu-img", "convert", "-O", "qcow2", str(raw), str(work / "base.qcow2")], log)
        raw.unlink()
        shutil.rmtree(rootfs)
        os.chmod(work, 0o755)
        work.rename(image.directory)  # atomic: a half-built image never has the final name
    finally:
        shutil.rmtree(work, ignore_errors=True)
    size = image.disk.stat().st_size / 2**20
    say(f"base image {image.directory.name}: {size:.0f} MiB at {image.disk}")
    return image


def _customise(rootfs: Path, recipe: Recipe) -> None:
    for rel, content in recipe.files.items():
        target = rootfs / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    for key in rootfs.glob("etc/ssh/ssh_host_*"):
        key.unlink()
    system = rootfs / "etc/systemd/system"
    for unit in (*recipe.masked, *recipe.role_units):
        _mask(system / unit)
    for generator in recipe.masked_generators:
        _mask(rootfs / "etc/systemd/system-generators" / generator)
    for unit in recipe.role_units:
        for wants in _wanted_by(system, unit):
            wants.unlink()
        for rc_link in rootfs.glob(f"etc/rc?.d/[SK][0-9][0-9]{unit.removesuffix('.service')}"):
            rc_link.unlink()
    for deb in (rootfs / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()
    for lists in (rootfs / "var/lib/apt/lists").glob("*_*"):
        lists.unlink()


def _mask(link: Path) -> None:
    """systemd's mask, for a unit or a generator: a link to /dev/null in /etc overrides the package's."""
    link.parent.mkdir(parents=True, exist_ok=True)
    link.unlink(missing_ok=True)
    link.symlink_to("/dev/null")


def units_started_at_boot(rootfs: Path, units: tuple[str, ...]) -> list[str]:
    """What in a root file system would start one of `units` at boot: checked on the built tree,
    not on the recipe (deleting `*.wants` links alone once left all three starting)."""
    found = []
    system = rootfs / "etc/systemd/system"
    for unit in units:
        mask = system / unit
        if not (mask.is_symlink() and os.readlink(mask) == "/dev/null"):
            found.append(f"{unit} is not masked in /etc/systemd/system")
        found += [f"{unit} is wanted by {w.parent.name}" for w in _wanted_by(system, unit)]
        name = unit.removesuffix(".service")
        found += [
            f"{unit} has SysV start link /{p.relative_to(rootfs)}" for p in rootfs.glob(f"etc/rc?.d/S[0-9][0-9]{name}")
        ]
    return found


def _wanted_by(system: Path, unit: str) -> list[Path]:
    """`*.wants/<unit>` links. Not `glob("*.wants/unit")`: a literal last part is tested with exists(),
    which follows the link to /lib/systemd/system/<unit> on the build host, where it is not."""
    return [d / unit for d in system.glob("*.wants") if (d / unit).is_symlink() or (d / unit).exists()]


def _newest(directory: Path, prefix: str) -> Path:
    found = sorted(directory.glob(prefix + "*"))
    if not found:
        raise FileNotFoundError(f"no {prefix}* in {directory}: did linux-image-amd64 install?")
    return found[-1]


def _bytes(size: str) -> int:
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    return int(size[:-1]) * units[size[-1]] if size[-1] in units else int(size)
