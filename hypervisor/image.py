"""The offline base image: Debian bookworm by debootstrap, every role's packages baked in.

Guests here cannot download anything, so cloud-init only configures. What goes into it is data
(runtime/builtin-image.yaml: packages, load tools built from their Go modules, files, masked units); the image is named by a hash of that
recipe (runtime/hostfacts.py `image_key`, which the program uses to find it) and never rebuilt in
place: overlays of running VMs keep pointing at the old file while a new recipe builds a new one
beside it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from hypervisor import paths
from hypervisor.progress import StepFailed, run_logged, say
from runtime.hostfacts import BuiltImage, Recipe, builtin_image


def build(recipe: Recipe | None = None) -> BuiltImage:
    """Build the image unless an image with the same key exists; returns where it is."""
    recipe = recipe or Recipe.load()
    image = builtin_image(recipe)
    if image.exists():
        say(f"base image {image.directory.name}: cached")
        return image
    with paths.build_lock(image.directory.name):
        if image.exists():  # built by another ./labctl while this one waited
            return image
        return _build(recipe, image)


# The image's steps yield the CPU to the engine's Go build, the set-up's critical path when both run
# (./labctl's first set-up): debootstrap finished 100 s before the build while taking a core from it.
NICE = 10


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
            nice=NICE,
        )
        _customise(rootfs, recipe)
        for name, module in recipe.go_tools.items():
            binary = rootfs / "usr/local/bin" / name
            binary.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(go_tool(name, module), binary)
            binary.chmod(0o755)
        run_logged(
            "initramfs with the guests' disk drivers only",
            ["chroot", str(rootfs), "update-initramfs", "-u", "-k", "all"],
            log,
            nice=NICE,
        )
        started = units_started_at_boot(rootfs, recipe.role_units)
        if started:
            raise StepFailed(f"the built image would start role services at boot: {'; '.join(started)}")
        shutil.copy(_newest(rootfs / "boot", "vmlinuz-"), work / "vmlinuz")
        shutil.copy(_newest(rootfs / "boot", "initrd.img-"), work / "initrd.img")
        raw = work / "root.raw"
        with raw.open("wb") as f:
            f.truncate(_bytes(recipe.disk_size))
        run_logged(
            "mkfs.ext4 from the rootfs", ["mkfs.ext4", "-q", "-L", "root", "-d", str(rootfs), str(raw)], log, nice=NICE
        )
        run_logged(
            "convert to qcow2",
            ["qemu-img", "convert", "-O", "qcow2", str(raw), str(work / "base.qcow2")],
            log,
            nice=NICE,
        )
        raw.unlink()
        shutil.rmtree(rootfs)
        os.chmod(work, 0o755)
        work.rename(image.directory)  # atomic: a half-built image never has the final name
    finally:
        shutil.rmtree(work, ignore_errors=True)
    size = image.disk.stat().st_size / 2**20
    say(f"base image {image.directory.name}: {size:.0f} MiB at {image.disk}")
    return image


def go_tool(name: str, module: str) -> Path:
    """A load tool built from its Go module into the cache, keyed by module and version (built once)."""
    path, _, version = module.partition("@")
    target = paths.cache_dir() / "tools" / f"{name}-{version}" / name
    if target.exists():
        return target
    go = shutil.which("go")
    if not go:
        raise StepFailed(f"{name} ({module}) is built for the image and there is no Go toolchain: install Go 1.26")
    src = target.parent / "src"
    src.mkdir(parents=True, exist_ok=True)
    log = target.parent / "build.log"
    env = {**os.environ, "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
    if not (src / "go.mod").exists():
        run_logged(f"{name}: go mod init", [go, "mod", "init", f"local/{name}"], log, cwd=src, env=env)
    run_logged(f"{name} {version}: fetch modules", [go, "get", module], log, cwd=src, env=env, nice=NICE)
    partial = target.with_name(f"{name}.partial")
    run_logged(
        f"{name} {version}: go build",
        [go, "build", "-trimpath", "-ldflags", "-s -w", "-o", str(partial), path],
        log,
        cwd=src,
        env=env,
        nice=NICE,
    )
    partial.rename(target)  # whole or not at all
    return target


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
