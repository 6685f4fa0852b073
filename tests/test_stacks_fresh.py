"""Every stack the repository ships works from a fresh clone, and leaves the clone clean.

The tracked Pulumi.<stack>.yaml files are templates: ./labctl copies one into .stacks/ (Pulumi.yaml's
stackConfigDir, ignored by git) the first time the stack is used, and Pulumi writes that checkout's
secrets salt there. Here a fresh copy of the tracked files (as `git clone` gives) selects each stack
with the real CLI as `./labctl up STACK` does (its own state and passphrase), reads its config back
through the secrets manager (a salt made with another checkout's passphrase fails exactly there),
and `git status` is clean after; each stack's program is then run under mocks, with hosts that fit.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hypervisor import paths, pulumi_cli
from lab.config import stack_template
from tests.program import run_program

TEMPLATES = sorted(
    p.name
    for p in paths.PROJECT_DIR.glob("Pulumi.*.yaml")
    if subprocess.run(
        ["git", "ls-files", "--error-unmatch", p.name], cwd=paths.PROJECT_DIR, capture_output=True
    ).returncode
    == 0
    or not (paths.PROJECT_DIR / ".git").exists()
)
STACKS = [name.removeprefix("Pulumi.").removesuffix(".yaml") for name in TEMPLATES]


def git(clone: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=clone, capture_output=True, text=True, check=True)
    return done.stdout


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """The tracked files, committed in a repository of their own: what a new user's clone holds."""
    dest = tmp_path_factory.mktemp("clone") / "l2dsr"
    tracked = git(paths.PROJECT_DIR, "ls-files", "-z").split("\0")
    for name in filter(None, tracked):
        src = paths.PROJECT_DIR / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    git(dest, "init", "-q")
    git(dest, "add", "-A")
    git(dest, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "clone")
    return dest


def test_the_repository_ships_its_four_stacks_without_any_checkouts_salt():
    assert set(STACKS) >= {"lab", "seed", "seed25", "twohost"}
    for name in TEMPLATES:
        assert "encryptionsalt" not in (paths.PROJECT_DIR / name).read_text(), name


@pytest.mark.parametrize("stack", STACKS)
def test_each_stack_is_selected_from_a_fresh_clone_and_leaves_it_clean(clone, stack, tmp_path, monkeypatch):
    engine = pulumi_cli.bin_dir()  # the CLI and our plugins' launchers, built once for every checkout
    monkeypatch.setenv("L2DSR_STATE", str(tmp_path / "state"))  # the clone's own state and passphrase
    for key in ("PULUMI_BACKEND_URL", "PULUMI_HOME", "PULUMI_CONFIG_PASSPHRASE", "PULUMI_CONFIG_PASSPHRASE_FILE"):
        monkeypatch.delenv(key, raising=False)  # made by pulumi_env, as ./labctl makes them
    env = dict(os.environ)
    assert pulumi_cli.pulumi_env(env)["PULUMI_BACKEND_URL"] == f"file://{tmp_path / 'state' / 'backend'}"
    make = "from hypervisor.__main__ import stack_file_from_template as f; import sys; f(sys.argv[1])"
    subprocess.run([sys.executable, "-c", make, stack], cwd=clone, env=env, check=True, capture_output=True)
    env = pulumi_cli.pulumi_env(env)
    env["PATH"] = f"{engine}{os.pathsep}{env['PATH']}"
    pulumi = str(engine / "pulumi")
    for args in (["stack", "select", "--create", stack], ["config", "--show-secrets", "--json", "--stack", stack]):
        done = subprocess.run([pulumi, *args], cwd=clone, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"pulumi {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}"
    shipped = yaml.safe_load((clone / f"Pulumi.{stack}.yaml").read_text())["config"]
    own = yaml.safe_load((clone / ".stacks" / f"Pulumi.{stack}.yaml").read_text())
    assert own["config"] == shipped and own["encryptionsalt"].startswith("v1:")  # the clone's own salt
    assert git(clone, "status", "--porcelain") == ""


@pytest.mark.parametrize("stack", STACKS)
def test_each_stacks_program_runs_under_mocks(stack, tmp_path, monkeypatch):
    values = {
        k.removeprefix("l2dsr:"): v for k, v in yaml.safe_load(stack_template(stack).read_text())["config"].items()
    }
    for h in values.get("hosts") or []:  # the simulated hosts' key, as `./labctl hosts up` makes it
        if h.get("identityFile"):
            key = Path(os.path.expanduser(h["identityFile"].replace("~", str(tmp_path))))
            key.parent.mkdir(parents=True, exist_ok=True)
            key.write_text("a key\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    registered, _ = run_program({"image": "/srv/images/base.qcow2", "domainType": "kvm", **values}, stack=stack)
    domains = [r for r in registered if r.type.endswith("l2dsr:Domain")]
    assert len(domains) == int(values.get("webCount", 25)) + int(values.get("clientCount", 1)) + 1
