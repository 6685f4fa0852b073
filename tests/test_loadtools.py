"""The load tools as one family (loadtools/): each declares its facts once, and what reads them (the
configuration's check, the cloud images' packages, the builtin image, the memory and cost estimates)
follows the module, not a list of names. Pure."""

from __future__ import annotations

import pytest

from guest import render
from lab.addressing import plan
from lab.config import read_spec
from lbmodes import MODES, tool_problems
from loadtools import TOOLS
from runtime import hostfacts
from tests.conftest import lab_of, spec_of

BUILTIN_FAMILY = "debian"  # the builtin image is Debian's


def test_the_family_is_found_from_its_modules():
    assert {"ab", "wrk"} <= set(TOOLS)
    assert all(name == tool.name for name, tool in TOOLS.items())


@pytest.mark.parametrize("tool", TOOLS.values(), ids=lambda t: t.name)
def test_every_tool_declares_what_the_lab_reads(tool):
    assert tool.packages.get(BUILTIN_FAMILY), "the builtin image's family must carry every tool"
    assert tool.rate_per_vcpu > 0  # the cost estimate's clients
    what, mib = tool.client_memory(1000)
    assert what == f"{tool.name} 1000 connections" and mib > tool.client_memory(10)[1] >= tool.memory_base_mib


@pytest.mark.parametrize("tool", TOOLS.values(), ids=lambda t: t.name)
def test_the_builtin_image_carries_every_tools_package(tool):
    recipe = hostfacts.Recipe.load()
    assert set(tool.packages[BUILTIN_FAMILY]) <= set(recipe.packages), tool.name


@pytest.mark.parametrize("family", ["debian", "rhel"])
def test_a_cloud_images_clients_get_every_tool_of_its_family(family):
    spec = spec_of({"image": "/var/lib/libvirt/images/x.qcow2", "imageFamily": family})
    mode, p = MODES[spec.mode], plan(spec)
    client = next(g for g in p.guests if g.role == "client")
    packages = render.role_packages(spec, mode, p, client)
    for tool in TOOLS.values():
        assert set(tool.packages.get(family, ())) <= set(packages), tool.name
    web = next(g for g in p.guests if g.role == "web")
    assert not {pkg for t in TOOLS.values() for pkg in t.packages.get(family, ())} & set(
        render.role_packages(spec, mode, p, web)
    )


def test_a_tool_without_a_package_for_the_image_family_is_refused_and_the_fix_named():
    spec, _ = lab_of({})
    rhel, _ = read_spec({"image": "/var/lib/libvirt/images/rocky.qcow2", "imageFamily": "rhel", "benchTool": "wrk"})
    (problem,) = tool_problems(rhel, TOOLS["wrk"])
    assert problem.key == "benchTool" and "use l2dsr:benchTool ab" in problem.text
    assert tool_problems(spec, TOOLS["wrk"]) == []  # the builtin image has every tool
