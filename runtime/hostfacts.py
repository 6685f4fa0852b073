"""What the program needs of the host set-up (hypervisor/), in one small place; nothing here starts
or changes anything.

- Where things are: the project, the cache of built artefacts (`L2DSR_CACHE`, default
  ~/.cache/l2dsr), a downloaded cloud image (`download_path`).
- The builtin image: its recipe (runtime/builtin-image.yaml, data), its key, where the build puts
  it, and how it boots. hypervisor/image.py builds it; the program only looks for it.
- What `./labctl setup` (hypervisor/libvirt.py) found and started, in /run/l2dsr/host.json: which
  libvirtd (ours in a network namespace, or the system's), that namespace, and whether KVM can run
  guests here. The program reads it for `l2dsr:domainType: auto`, and every SSH to a guest for the
  namespace (the lab's addresses exist only inside it).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parent.parent
RECIPE_FILE = Path(__file__).resolve().parent / "builtin-image.yaml"
RUN_DIR = Path("/run/l2dsr")
RECORD = RUN_DIR / "host.json"
DOMAIN_TYPES = ("kvm", "qemu")


@dataclass
class HostRecord:
    """What setup started, so teardown stops exactly that, and what it found."""

    libvirtd: str  # system (a running system libvirtd) | sandbox (ours, in a network namespace)
    namespace: str = ""
    pids: dict[str, int] = field(default_factory=dict)
    created_pool: bool = False
    domain_type: str = ""  # kvm when KVM ran a probe guest here, else qemu (software emulation)
    directory: str = ""  # the sandbox's private libvirt directories (hypervisor/libvirt.py SANDBOX_DIR)
    created_dirs: list[str] = field(default_factory=list)  # mount points setup made on the host: removed at down


class RecordUnreadable(RuntimeError):
    """A record of the lab's that a crash cut short, or something else wrote: said once, readably."""


def atomic_write(path: Path, text: str, mode: int | None = None) -> None:
    """`text` into `path` whole or not at all: written beside it, flushed, then renamed over it (a crash
    leaves the old file or the new one, never a truncated one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if mode is None else mode)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_json(path: Path, what: str, fix: str) -> Any:
    """A JSON record, or RecordUnreadable naming the file, what it is and what to do."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RecordUnreadable(f"{path} ({what}) cannot be read: {e}; {fix}") from None


def read_record(path: Path | None = None) -> HostRecord | None:
    path = path or RECORD
    if not path.exists():
        return None
    data = read_json(
        path,
        "what ./labctl setup started",
        f"stop what it names by hand if it runs (ip netns list; ps -C libvirtd), remove {path}, run ./labctl setup",
    )
    if not isinstance(data, dict):
        raise RecordUnreadable(f"{path} is not a record of ./labctl setup; remove it and run ./labctl setup")
    data.setdefault("libvirtd", data.pop("mode", "system"))  # a record written before the field's rename
    return HostRecord(**{k: v for k, v in data.items() if k in HostRecord.__dataclass_fields__})


def write_record(rec: HostRecord, path: Path | None = None) -> None:
    atomic_write(path or RECORD, json.dumps(asdict(rec), indent=1), mode=0o644)


class DomainTypeUnknown(RuntimeError):
    pass


def resolve_domain_type(configured: str) -> str:
    """The program's answer for l2dsr:domainType: explicit, or what setup's probe found."""
    if configured in DOMAIN_TYPES:
        return configured
    rec = read_record()
    if rec and rec.domain_type:
        return rec.domain_type
    raise DomainTypeUnknown(
        "l2dsr:domainType: auto, but this host has not been probed for KVM yet: run ./labctl setup, "
        "or set l2dsr:domainType to kvm or qemu"
    )


class OutsideLabNamespace(RuntimeError):
    pass


def assert_in_lab_namespace() -> None:
    """Refuse to talk to guests from anywhere but the lab's namespace when the lab runs in one.

    The lab's addresses are private ranges that exist only inside it; from the host's own namespace
    the same addresses lead off this machine, where nothing of ours is and nothing may be sent.
    """
    rec = read_record()
    if not rec or not rec.namespace:
        return
    ours = Path(f"/run/netns/{rec.namespace}")
    if not ours.exists() or os.stat("/proc/self/ns/net").st_ino != ours.stat().st_ino:
        raise OutsideLabNamespace(
            f"the lab's addresses live in network namespace {rec.namespace}, and this process is not in it: "
            f"run it through ./labctl (or ./labctl sh COMMAND)"
        )


# ---- where built things are ------------------------------------------------------------------------


def cache_dir() -> Path:
    """Build results (engine binaries, images, downloads). Override with L2DSR_CACHE."""
    return Path(os.environ.get("L2DSR_CACHE") or Path.home() / ".cache" / "l2dsr")


def in_flight_dir() -> Path:
    """The volume providers' journal of creates in flight (resources/volume.py)."""
    return cache_dir() / "in-flight"


def download_path(url: str) -> Path:
    """Where `./labctl fetch` keeps the cloud image at `url` (the program never downloads)."""
    return cache_dir() / "downloads" / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{os.path.basename(url)}"


# ---- the builtin image -------------------------------------------------------------------------------


def _recipe_data() -> dict:
    import yaml  # here, not at the top: ./labctl builds the engine with this module before the venv exists

    return yaml.safe_load(RECIPE_FILE.read_text())


@dataclass(frozen=True)
class Recipe:
    """Everything that goes into the builtin image (runtime/builtin-image.yaml); its hash is the key."""

    suite: str
    mirror: str
    packages: tuple[str, ...]
    files: dict[str, str]
    masked: tuple[str, ...]
    masked_generators: tuple[str, ...]
    role_units: tuple[str, ...]
    disk_size: str
    builder_version: int
    go_tools: dict[str, str]  # a tool no distribution packages -> its Go module@version, built on the host

    @classmethod
    def load(cls, **changes: object) -> Recipe:
        data = {k: v for k, v in _recipe_data().items() if k in cls.__dataclass_fields__}
        data = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**{**data, **changes})  # type: ignore[arg-type]


def kernel_cmdline() -> str:
    """How the builtin image boots (the recipe's kernel_cmdline; not part of its key)."""
    return str(_recipe_data()["kernel_cmdline"])


def image_key(recipe: Recipe) -> str:
    """Content key of an image: same inputs, same key; any change, a new image beside the old."""
    blob = json.dumps(asdict(recipe), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True)
class BuiltImage:
    directory: Path
    key: str

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
    recipe = recipe or Recipe.load()
    key = image_key(recipe)
    return BuiltImage(cache_dir() / "images" / f"debian-{recipe.suite}-{key}", key)
