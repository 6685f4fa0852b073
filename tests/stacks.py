"""Throw-away stacks for tests that drive the real engine: own backend, own stack file, removed after."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from hypervisor import libvirt, paths, pulumi_cli
from lab import config


def project_copy(dest: Path) -> Path:
    """The project as a second checkout would have it: the code and the lab stack, no state, no caches."""
    shutil.copytree(
        paths.PROJECT_DIR,
        dest,
        ignore=shutil.ignore_patterns(".venv", ".state", ".stacks", "results", ".git", "*cache*", "Pulumi.[!l]*.yaml"),
    )
    return dest


def failure_text(said: str, tail: int = 4000) -> str:
    """What a failed command said: every error line and what follows it (the VM, what failed, its
    log lines: a first error can sit far above the summary's end), then the end of the output."""
    lines = said.splitlines()
    errors = []
    for i, line in enumerate(lines):
        if "error:" in line and not line.strip().startswith(("error: update failed", "error: Resource monitor")):
            errors += lines[i : i + 25] + ["..."]
    return "\n".join([*errors[:400], "--- the end of the output:", said[-tail:]])


class Cli:
    def __init__(self, backend: Path, stack: str, project_dir: Path = paths.PROJECT_DIR):
        self.stack = stack
        self.project_dir = project_dir
        self.env = pulumi_cli.pulumi_env()
        self.env["PULUMI_BACKEND_URL"] = f"file://{backend}"
        self.env["PULUMI_CONFIG_PASSPHRASE"] = "l2dsr-test"
        self.env.pop("PULUMI_CONFIG_PASSPHRASE_FILE", None)
        self.prefix = libvirt.in_namespace(libvirt.read_record())

    def __call__(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        argv = [*self.prefix, str(pulumi_cli.bin_dir() / "pulumi"), *args, "--stack", self.stack]
        done = subprocess.run(argv, cwd=self.project_dir, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check:
            assert done.returncode == 0, f"pulumi {' '.join(args)}:\n{failure_text(done.stdout + done.stderr)}"
        return done


@contextmanager
def lab_stack(backend: Path, stack: str, project_dir: Path = paths.PROJECT_DIR, **overrides: object) -> Iterator[Cli]:
    """A stack with the lab stack's config (plus overrides) and its own secrets salt."""
    stack_file = config.stack_file(stack, project_dir)
    backend.mkdir(parents=True, exist_ok=True)
    cli = Cli(backend, stack, project_dir)
    init = subprocess.run(
        [str(pulumi_cli.bin_dir() / "pulumi"), "stack", "init", stack],
        cwd=project_dir,
        env=cli.env,
        capture_output=True,
        text=True,
    )
    assert init.returncode == 0, f"pulumi stack init {stack}: {init.stderr.strip() or init.stdout.strip()}"
    try:
        doc = yaml.safe_load(stack_file.read_text()) or {}
        lab = yaml.safe_load((paths.PROJECT_DIR / "Pulumi.lab.yaml").read_text())["config"]
        doc["config"] = {**lab, **{f"l2dsr:{k}": v for k, v in overrides.items()}}
        stack_file.write_text(yaml.safe_dump(doc))
        yield cli
    finally:
        stack_file.unlink(missing_ok=True)
