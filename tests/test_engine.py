"""The real Pulumi engine: CLI, our language host and the dynamic providers, previewing the lab stack.

It uses a throw-away file backend and stack; the preview's checks talk to the real libvirtd
(connection, storage pool, subnets) but nothing is created.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from tests.stacks import lab_stack


@pytest.fixture()
def cli(tmp_path):
    # Its own subnets: a lab stack that is up on this host must not fail this preview.
    own = {
        "frontSubnet": "192.168.77.0/24",
        "vip": "192.168.77.100",
        "serverSubnet": "172.16.77.0/24",
        "firstWebAddress": "172.16.77.101",
    }
    with lab_stack(tmp_path, "preview-test", **own) as run:
        yield run


def test_preview_of_the_lab_stack_plans_the_lab(cli):
    done = cli("preview", "--json")
    plan = json.loads(done.stdout)
    creates = Counter(step["newState"]["type"] for step in plan["steps"] if step["op"] == "create")
    assert creates["pulumi-python:dynamic/l2dsr:Domain"] == 4
    assert creates["pulumi-python:dynamic/l2dsr:Volume"] == 7  # 4 disks, the base and its kernel and initrd
    assert creates["pulumi-python:dynamic/l2dsr:CloudInitDisk"] == 4
    assert creates["pulumi-python:dynamic/l2dsr:Network"] == 1
    assert creates["pulumi-python:dynamic/l2dsr:Tunnel"] == 0  # one host: no VXLAN
    assert creates["l2dsr:lab:Vm"] == 4 and creates["l2dsr:lab:Benchmark"] == 1
    assert creates["pulumi-python:dynamic/l2dsr:VmReady"] == creates["pulumi-python:dynamic/l2dsr:GuestState"] == 4
    assert creates["pulumi:pulumi:Stack"] == 1
    # 11 components (the stack, 4 Vm, web tier, LB, clients, network, base image, benchmark) + 24 resources
    assert creates["pulumi-python:dynamic/l2dsr:StackIdentity"] == 1
    assert plan["changeSummary"]["create"] == sum(creates.values()) == 38
    # Nothing is downloaded by the program: no message says so (the plan's inputs may hold the word,
    # e.g. curl's %{size_download} in a web's state check).
    said = done.stderr + json.dumps(plan.get("diagnostics", []))
    assert "download" not in said.lower()


def test_bad_config_fails_the_preview_with_the_key_once_and_no_traceback(cli):
    cli("config", "set", "l2dsr:webCount", "0")
    cli("config", "set", "l2dsr:benchConcurency", "30")  # misspelt: refused, not ignored
    done = cli("preview", check=False)
    out = done.stdout + done.stderr
    assert done.returncode != 0
    assert out.count("l2dsr:webCount: 0 is below 1") == 1
    assert out.count("l2dsr:benchConcurency: unknown key; did you mean l2dsr:benchConcurrency?") == 1
    assert "unhandled error" not in out and "Traceback" not in out


def test_missing_pool_fails_the_preview_before_anything_is_created(cli):
    cli("config", "set", "l2dsr:storagePool", "no-such-pool")
    done = cli("preview", check=False)
    assert done.returncode != 0
    assert "no libvirt storage pool 'no-such-pool'" in done.stdout + done.stderr


def test_a_lab_bigger_than_the_host_is_refused_once_before_anything_is_created(cli):
    cli("config", "set", "l2dsr:webMemoryMiB", str(1024 * 1024))  # 1 TiB per web: more than any host here
    done = cli("preview", check=False)
    out = done.stdout + done.stderr
    assert done.returncode != 0
    assert out.count("l2dsr:webMemoryMiB: the lab needs") == 1, out
    assert "and this host has" in out and "lower l2dsr:webCount or l2dsr:webMemoryMiB" in out
    assert "unhandled error" not in out and "Traceback" not in out
