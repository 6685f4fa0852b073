"""A cloud image named by URL (`l2dsr:image: https://...`), downloaded at set-up, never by the program.

`./labctl up STACK` (and `./labctl fetch STACK`) download it once into the cache, keyed by the URL,
with a timeout on every read and, when `l2dsr:imageSha256` is set, a checksum check. The Pulumi
program only looks for the file (download_path) and, when it is missing, says what to run.
"""

from __future__ import annotations

import hashlib
import urllib.request
from pathlib import Path

from hypervisor import paths
from hypervisor.progress import StepFailed, say
from lab.config import stack_values
from runtime.hostfacts import download_path

READ_TIMEOUT_S = 60  # per read: a stalled server fails the step instead of hanging it


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(url: str, sha256: str = "", timeout: float = READ_TIMEOUT_S) -> Path:
    """The image at `url`, downloaded once; a checksum mismatch is an error naming the key."""
    target = download_path(url)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        say(f"downloading {url}")
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, partial.open("wb") as out:  # noqa: S310
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    out.write(chunk)
        except OSError as e:
            partial.unlink(missing_ok=True)
            raise StepFailed(f"l2dsr:image: cannot download {url}: {e}; check the URL, or use a local path") from None
        partial.rename(target)
    if sha256:
        got = file_sha256(target)
        if got != sha256.lower():
            target.unlink()
            raise StepFailed(
                f"l2dsr:imageSha256: {url} has SHA-256 {got}, not {sha256}; fix the URL or the checksum "
                "(the download was removed)"
            )
    return target


def fetch_for_stack(stack: str, project_dir: Path = paths.PROJECT_DIR) -> Path | None:
    """What the stack file names as its image, if that is a URL (read as the program reads it: lab/config.py)."""
    config = stack_values(stack, project_dir)
    url = str(config.get("image", ""))
    if not url.startswith(("http://", "https://")):
        return None
    return fetch(url, str(config.get("imageSha256", "")))
