"""What a stack is made once with: its identity (what marks its libvirt objects) and its SSH key."""

from __future__ import annotations

import secrets
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, ReadResult, ResourceProvider

from resources.base import Declared


@dataclass(frozen=True)
class StackIdentityArgs:
    project: str
    stack: str


@dataclass(frozen=True)
class StackIdentityOutputs:
    owner: str  # <project>/<stack>/<random>: hashed into every domain's and network's UUID


class IdentityProvider(ResourceProvider):
    """A random token made once per stack state: what marks the libvirt objects as this stack's."""

    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        owner = f"{props['project']}/{props['stack']}/{secrets.token_hex(8)}"
        return CreateResult(id_=owner, outs={**props, "owner": owner})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_, props)


class StackIdentity(Declared, module="l2dsr", name="StackIdentity"):
    Args = StackIdentityArgs
    Outputs = StackIdentityOutputs
    provider = IdentityProvider

    owner: pulumi.Output[str]


@dataclass(frozen=True)
class SshKeyArgs:
    comment: str


@dataclass(frozen=True)
class SshKeyOutputs:
    public_key: str
    private_key: str  # a secret in the state


class SshKeyProvider(ResourceProvider):
    """An ed25519 key pair made once per stack; the private half is a secret in the state."""

    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        with tempfile.TemporaryDirectory() as tmp:
            key = Path(tmp) / "id"
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", props["comment"], "-f", str(key)],
                check=True,
                capture_output=True,
            )
            outs = {**props, "public_key": key.with_suffix(".pub").read_text().strip(), "private_key": key.read_text()}
        return CreateResult(id_=props["comment"], outs=outs)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_, props)


class SshKey(Declared, module="l2dsr", name="SshKey"):
    Args = SshKeyArgs
    Outputs = SshKeyOutputs
    provider = SshKeyProvider
    secret_outputs = ("private_key",)

    public_key: pulumi.Output[str]
    private_key: pulumi.Output[str]
