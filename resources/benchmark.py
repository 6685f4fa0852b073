"""The post-deploy benchmark as a resource, shaped like pulumi-command's remote `Command`: a
`connection` (who logs in, with which key), what to run on `create`, nothing on `delete`, and
`triggers` that rerun it. It runs when its inputs change, not on every `pulumi up`.

Where ours differs from pulumi-command's: `create` is a benchmark plan (bench/spec.py BenchSpec)
run from the host over SSH to many VMs, not one shell command on one host, and its output is the
structured `result`, not `stdout`. `results_dir` (where the raw output is kept on this host) is
never compared, so moving the checkout does not rerun it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult

from bench.runner import run
from bench.spec import BenchSpec
from resources.base import Declared, ReplaceOnChange, read_props
from runtime.ssh import KeyFile, Ssh


@dataclass(frozen=True)
class Connection:
    user: str
    private_key: pulumi.Input[str]


@dataclass(frozen=True)
class CommandArgs:
    connection: Connection
    create: BenchSpec
    triggers: tuple[pulumi.Input[str], ...]  # a VM booted anew (its boot id), or l2dsr:benchTrigger: a new run
    results_dir: str
    delete: str = ""  # nothing to undo: the raw results stay on the host as the record of the run


@dataclass(frozen=True)
class CommandOutputs:
    result: dict


class BenchmarkProvider(ReplaceOnChange):
    not_compared = ("results_dir",)

    def create(self, props: dict[str, Any]) -> CreateResult:
        args = read_props(CommandArgs, props)
        with (
            KeyFile(str(args.connection.private_key)) as key,  # the plain key, in the provider
            Ssh.to(args.connection.user, key, args.create.vms).multiplexed() as ssh,  # a connection per VM
        ):
            ssh.connect([vm.address for vm in args.create.vms])
            result = run(args.create, ssh, args.results_dir)
        return CreateResult(id_=result["raw_dir"], outs={**props, "result": result})

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        pass


class Command(Declared, module="l2dsr", name="Command"):
    Args = CommandArgs
    Outputs = CommandOutputs
    provider = BenchmarkProvider
    secret_outputs = ("connection",)  # it holds the private key

    result: pulumi.Output[dict]
