"""The provider process the CLI runs for the lab's dynamic resources (engine/provider_host.py)."""

from __future__ import annotations

import pytest

import runtime
from engine import provider_host


class FakeContext:
    def __init__(self) -> None:
        self.aborted: tuple[object, str] | None = None

    def abort(self, code, details: str) -> None:
        self.aborted = (code, details)
        raise RuntimeError("aborted")


def servicer():
    base, _ = provider_host._sdk_servicer()
    return provider_host.make_servicer(base)()


def test_the_sdk_servicer_loads_without_starting_its_server():
    base, namespace = provider_host._sdk_servicer()
    assert base.__name__ == "DynamicResourceProviderServicer" and "main" in namespace


def test_a_lab_failure_reaches_the_cli_as_its_message_and_anything_else_as_a_traceback():
    for error, expect in (
        (runtime.LabFailure("web01 (l2dsr-lab-web01, 172.16.0.101): cloud-init ended in error after 80 s"), "exact"),
        (KeyError("boom"), "traceback"),
    ):
        context = FakeContext()
        try:
            raise error
        except Exception:
            with pytest.raises(RuntimeError):
                provider_host._Context(context).abort("UNKNOWN", "Traceback (most recent call last): ...")
        assert context.aborted is not None
        details = context.aborted[1]
        assert (details == str(error)) if expect == "exact" else details.startswith("Traceback")


def test_cancel_from_the_engine_reaches_the_lab_code():
    try:
        servicer().Cancel(None, None)
        assert runtime.cancelled.is_set()
    finally:
        runtime.cancelled.clear()


def test_create_runs_with_the_resources_urn_for_its_log_lines(monkeypatch):
    seen = []
    monkeypatch.setattr(runtime, "_sink", lambda sev, msg, eph, urn: seen.append((urn, msg)))
    base, _ = provider_host._sdk_servicer()

    def create(self, request, context):
        runtime.log("web01: booting")
        return "created"

    monkeypatch.setattr(base, "Create", create)
    host = provider_host.make_servicer(base)()

    class Request:
        urn = "urn:pulumi:lab::l2dsr::pulumi-python:dynamic/l2dsr:VmReady::web-web01-ready"

    assert host.Create(Request(), FakeContext()) == "created"
    assert seen == [(Request.urn, "web01: booting")]
    runtime.log("after")  # outside a call: no urn
    assert seen[-1] == ("", "after")
