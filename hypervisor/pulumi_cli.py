"""The Pulumi engine, offline: the CLI built from Go modules, our language host, and the settings.

What is found is used first (a `pulumi` on PATH of a suitable version, a CLI already built); only
what is missing is built, into the cache, keyed by version. Each checkout gets `.state/bin/`: a
hard link to the CLI with the Python language host and the dynamic-provider launcher beside it
(the CLI looks for those next to its own binary first and warns about anything else).

No provider plugins are needed: the Go modules of pulumi-libvirt and pulumi-command are not
served by the module proxy here, so the lab's resources are Python dynamic providers (components/).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from hypervisor import paths
from hypervisor.progress import StepFailed, follow, run_logged, say, stop_all
from runtime.hostfacts import atomic_write

CLI_VERSION = "v3.274.1"  # newest pkg/v3 the module proxy serves; >= the Python SDK (3.272.0)
MIN_CLI = (3, 272, 0)
CLI_PACKAGE = "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"
VERSION_VAR = "github.com/pulumi/pulumi/sdk/v3/go/common/version.Version"

LAUNCHERS = {
    # The CLI's Python language host: engine/langhost.py under the project's virtualenv.
    "pulumi-language-python": 'exec "{python}" -u "{project}/engine/langhost.py" "$@"',
    # The provider process of Python dynamic resources: the SDK's servicer with more threads, Cancel
    # and readable errors (engine/provider_host.py). It unpickles the lab's providers by module name,
    # so it alone gets the project on its path (given to every process, the project's cloudinit/
    # would shadow the real cloud-init's package).
    "pulumi-resource-pulumi-python": 'PYTHONPATH="{project}" exec "{python}" -u -m engine.provider_host "$@"',
}


def parse_version(text: str) -> tuple[int, int, int] | None:
    m = re.search(r"v?(\d+)\.(\d+)\.(\d+)", text)
    return (int(m[1]), int(m[2]), int(m[3])) if m else None


def cli_version(binary: Path | str) -> tuple[int, int, int] | None:
    try:
        out = subprocess.run([str(binary), "version"], capture_output=True, text=True, timeout=30).stdout
    except OSError:
        return None
    return parse_version(out)


def cached_cli() -> Path:
    return paths.cache_dir() / "engine" / f"pulumi-{CLI_VERSION}" / "pulumi"


def find_cli() -> Path | None:
    """A usable CLI without building: on PATH (outside our own bin) or in the cache."""
    own_bin = str(bin_dir())
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        if directory and os.path.realpath(directory) != os.path.realpath(own_bin):
            candidate = Path(directory) / "pulumi"
            if candidate.is_file() and (cli_version(candidate) or (0, 0, 0)) >= MIN_CLI:
                return candidate.resolve()
    return cached_cli() if cli_version(cached_cli()) == parse_version(CLI_VERSION) else None


def build_cli() -> Path:
    """Build the CLI from Go modules into the cache (a wrapper module ignores pkg/'s replaces)."""
    go = shutil.which("go")
    if not go:
        raise StepFailed(
            "the pulumi CLI must be built and there is no Go toolchain: install Go 1.26 (https://go.dev/dl)"
        )
    target = cached_cli()
    src = target.parent.parent / f"src-{CLI_VERSION}"
    log = engine_log()
    src.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
    if not (src / "go.mod").exists():
        run_logged("pulumi CLI: go mod init", [go, "mod", "init", "local/pulumi-cli"], log, cwd=src, env=env)
    run_logged(
        f"pulumi CLI {CLI_VERSION}: fetch modules", [go, "get", f"{CLI_PACKAGE}@{CLI_VERSION}"], log, cwd=src, env=env
    )
    tmp = target.with_name("pulumi.partial")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    run_logged(
        f"pulumi CLI {CLI_VERSION}: go build (several minutes on 2 cores)",
        [
            go,
            "build",
            "-trimpath",
            "-tags",
            "osusergo,grpcnotrace",
            "-ldflags",
            f"-s -w -X {VERSION_VAR}={CLI_VERSION}",
            "-o",
            str(tmp),
            CLI_PACKAGE,
        ],
        log,
        cwd=src,
        env=env,
    )
    tmp.rename(target)
    if cli_version(target) != parse_version(CLI_VERSION):
        raise StepFailed(f"pulumi CLI built but `pulumi version` does not print {CLI_VERSION}; see {log}")
    return target


def bin_dir() -> Path:
    return paths.state_dir() / "bin"


def venv_python() -> Path:
    return paths.PROJECT_DIR / ".venv" / "bin" / "python"


ENGINE_PID = "L2DSR_ENGINE_PID"  # ./labctl: the engine's build it started beside the virtualenv


def engine_log() -> Path:
    return paths.cache_dir() / "engine" / f"pulumi-{CLI_VERSION}.log"


def ensure_pulumi_step() -> bool:
    """The set-up graph's engine step: the build ./labctl started before the virtualenv existed,
    followed to its end (its failure is this step's), or else ensure_pulumi() here."""
    pid = os.environ.pop(ENGINE_PID, "")
    if pid.isdigit():
        follow(f"pulumi CLI {CLI_VERSION}", int(pid), engine_log())
    return ensure_pulumi()


def ensure_pulumi() -> bool:
    """Make .state/bin ready: the Pulumi CLI (built once into the cache) beside our language host and
    provider launchers (engine/); returns whether anything had to be built."""
    cli = find_cli()
    built = cli is None
    if cli is None:
        with paths.build_lock(f"pulumi-{CLI_VERSION}"):
            cli = find_cli() or build_cli()  # another ./labctl may have built it while this one waited
    else:
        say(f"pulumi CLI {'.'.join(map(str, cli_version(cli) or ()))}: {cli}")
    out = bin_dir()
    out.mkdir(parents=True, exist_ok=True)
    link = out / "pulumi"
    if not (link.exists() and os.path.samefile(link, cli)):
        link.unlink(missing_ok=True)
        try:
            os.link(cli, link)  # a hard link: "next to the real binary" holds for our launchers
        except OSError:
            shutil.copy2(cli, link)
    for name, body in LAUNCHERS.items():
        script = out / name
        text = "#!/bin/sh\n" + body.format(python=venv_python(), project=paths.PROJECT_DIR) + "\n"
        if not script.exists() or script.read_text() != text:
            script.write_text(text)
            script.chmod(0o755)
    return built


def pulumi_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for every pulumi call: offline, local state, no prompts, no downloads."""
    env = dict(os.environ if base is None else base)
    state = paths.state_dir()
    (state / "backend").mkdir(parents=True, exist_ok=True)
    env["PATH"] = os.pathsep.join([str(bin_dir()), str(venv_python().parent), env.get("PATH", "")])
    env.setdefault("PULUMI_HOME", str(state / "pulumi-home"))
    env.setdefault("PULUMI_BACKEND_URL", f"file://{state / 'backend'}")
    env["PULUMI_SKIP_UPDATE_CHECK"] = "true"
    env["PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION"] = "true"
    if "PULUMI_CONFIG_PASSPHRASE" not in env and "PULUMI_CONFIG_PASSPHRASE_FILE" not in env:
        env["PULUMI_CONFIG_PASSPHRASE_FILE"] = str(passphrase_file())
    return env


def passphrase_file() -> Path:
    """A random passphrase for this checkout's secrets, made once (set PULUMI_CONFIG_PASSPHRASE to choose)."""
    path = paths.state_dir() / "passphrase"
    if path.exists() and not path.read_text().strip():
        # only a crash between its creation and its write leaves it empty (it is written whole since):
        # no state can have been encrypted with it
        raise StepFailed(f"{path} is empty: remove it (a new one is made), or set PULUMI_CONFIG_PASSPHRASE")
    if not path.exists():
        atomic_write(path, secrets.token_urlsafe(24) + "\n", mode=0o600)
    return path


if __name__ == "__main__":
    # ./labctl runs this with the system's Python 3 (the standard library only: no virtualenv yet),
    # in its own process group, while it makes the virtualenv; the set-up then follows it.
    def ended(*_: object) -> None:
        stop_all()  # its go build (a process group of its own) ends with it
        sys.exit(143)

    signal.signal(signal.SIGTERM, ended)
    try:
        ensure_pulumi()
    except StepFailed as e:
        say(f"error: {e}")
        sys.exit(1)
