"""`./labctl ssh VM [COMMAND]`: into a VM of a stack (as `vagrant ssh` or `netlab connect`), with the
stack's key, through the VM's libvirt host when that host is remote; the key is never printed.

Outside the lab's namespace this reads the stack (its `vms` and `hosts` outputs, its key from the
state) with the pulumi CLI and puts the key in a 0600 file for the length of the session; inside it
(`--exec`), the same SSH the lab uses (runtime/ssh.py) replaces the process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from guest.render import LOGIN_USER
from hypervisor import libvirt, paths, pulumi_cli
from hypervisor.progress import StepFailed
from lab.spec import HostSpec
from runtime.hostshell import HostRef, ref_of
from runtime.ssh import KeyFile, Ssh


def private_key(state: dict) -> str:
    """The stack's SSH private key from `pulumi stack export --show-secrets` (a secret's plaintext is JSON)."""
    key = next(r for r in state["deployment"]["resources"] if r["type"].endswith(":SshKey"))["outputs"]["private_key"]
    return json.loads(key["plaintext"]) if isinstance(key, dict) else key


def find_vm(outputs: dict, name: str) -> tuple[dict, HostRef]:
    """The VM by its name (web01) or its domain (l2dsr-lab-web01), and the host it runs on."""
    vms = outputs.get("vms") or []
    vm = next((v for v in vms if v["name"] == name or v["name"].endswith(f"-{name}")), None)
    if vm is None:
        known = ", ".join(v["name"].rsplit("-", 1)[-1] for v in vms) or "none: is the stack up?"
        raise StepFailed(f"no VM {name!r} in this stack (its VMs: {known})")
    return vm, host_refs(outputs).get(vm.get("host", ""), HostRef())


def host_refs(outputs: dict) -> dict[str, HostRef]:
    """How the lab reaches each of the stack's hosts, from its `hosts` output."""
    return {
        h["name"]: ref_of(HostSpec(h["name"], h["uri"], h["address"], h["user"], h["identityFile"]))
        for h in outputs.get("hosts") or []
    }


def read_stack(stack: str, rec: libvirt.HostRecord | None, secrets: bool = True) -> tuple[dict, dict]:
    """The stack's outputs and its state (`stack export`, with `secrets` their plaintext), read with
    the pulumi CLI."""

    def cli(*argv: str) -> str:
        return subprocess.run(
            [*libvirt.in_namespace(rec), str(pulumi_cli.bin_dir() / "pulumi"), *argv, "--stack", stack],
            cwd=paths.PROJECT_DIR,
            env=pulumi_cli.pulumi_env(),
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    try:
        outputs = json.loads(cli("stack", "output", "--json") or "{}")
        state = json.loads(cli("stack", "export", *(["--show-secrets"] if secrets else [])))
    except subprocess.CalledProcessError as e:
        raise StepFailed(f"cannot read stack {stack}: {e.stderr.strip()} (./labctl up {stack} makes it)") from None
    return outputs, state


def key_in(state: dict) -> str:
    """The stack's private key, or "" when the state holds none yet (the guests cannot be asked)."""
    try:
        return private_key(state)
    except (StopIteration, KeyError):
        return ""


def main(args: list[str], rec: libvirt.HostRecord | None) -> int:
    stack = os.environ.get("L2DSR_STACK", "lab")
    outputs, state = read_stack(stack, rec)
    vm, host = find_vm(outputs, args[0])
    key = key_in(state)
    plan = {"address": vm["address"], "host": host.__dict__, "command": " ".join(args[1:])}
    with KeyFile(key) as key_file:
        plan["key"] = key_file
        inner = [*libvirt.in_namespace(rec), str(pulumi_cli.venv_python()), "-m", "hypervisor.vmssh", "--exec"]
        return subprocess.call([*inner, json.dumps(plan)], cwd=paths.PROJECT_DIR)


def exec_ssh(plan: dict) -> None:
    host = HostRef(**plan["host"])
    ssh = Ssh(LOGIN_USER, plan["key"], via={plan["address"]: host} if host.remote else {})
    argv = ssh.argv(plan["address"], plan["command"])
    if not plan["command"]:
        argv = [*argv[:1], "-t", *argv[1:-1]]  # a login shell: no command
    os.execvp(argv[0], argv)


if __name__ == "__main__" and sys.argv[1:2] == ["--exec"]:
    exec_ssh(json.loads(sys.argv[2]))
