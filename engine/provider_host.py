"""The provider process of the lab's Python dynamic resources: the SDK's own servicer, three changes.

The CLI starts it (as `pulumi-resource-pulumi-python`, see hypervisor/pulumi_cli.py) with the engine's address.
It runs the Python SDK's dynamic-provider servicer (pulumi/dynamic/__main__.py, executed without its
`main()`), with:

1. more worker threads (the SDK has 4): every VM's readiness waits at once, and no other call may
   queue behind those waits;
2. Cancel passed on (the engine calls it on Ctrl-C): runtime.cancelled is set, and waits and
   benchmark runs stop within seconds instead of running to their end;
3. readable failures: a LabFailure reaches the CLI as its message, not as a Python traceback; and
   runtime.log() lines appear under the resource being worked on, in `pulumi up` itself.
"""

from __future__ import annotations

import sys
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pulumi.dynamic
from pulumi.runtime.proto import engine_pb2, engine_pb2_grpc

import runtime
from engine import healthcheck
from runtime.ssh import end_masters

WORKERS = 64
CANCEL_WAIT_S = 15.0
_SEVERITY = {
    "debug": engine_pb2.DEBUG,
    "info": engine_pb2.INFO,
    "warning": engine_pb2.WARNING,
    "error": engine_pb2.ERROR,
}


def _sdk_servicer() -> tuple[type, dict[str, Any]]:
    """The SDK's servicer class and module namespace, without starting the SDK's own server."""
    path = Path(pulumi.dynamic.__file__).with_name("__main__.py")
    source = path.read_text()
    body, _, tail = source.rstrip().rpartition("\n")
    if tail.strip() != "main()":
        raise SystemExit(f"{path}: expected to end with main(); the SDK changed, review engine/provider_host.py")
    namespace: dict[str, Any] = {"__name__": "pulumi.dynamic._l2dsr_host", "__file__": str(path)}
    exec(compile(body, str(path), "exec"), namespace)  # noqa: S102 (the installed SDK's own module)
    return namespace["DynamicResourceProviderServicer"], namespace


class _Context:
    """The gRPC context, with a LabFailure's message instead of the traceback the SDK sends."""

    def __init__(self, context: grpc.ServicerContext):
        self._context = context

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, runtime.LabFailure):
            details = str(error)
        self._context.abort(code, details)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


def make_servicer(base: type) -> type:
    class LabProviderServicer(base):  # type: ignore[misc, valid-type]
        def _call(self, method: str, request: Any, context: grpc.ServicerContext) -> Any:
            runtime.set_current_urn(getattr(request, "urn", ""))
            try:
                return getattr(base, method)(self, request, _Context(context))
            finally:
                runtime.set_current_urn("")

        def Create(self, request, context):  # noqa: N802 (gRPC method names)
            return self._call("Create", request, context)

        def Update(self, request, context):  # noqa: N802
            return self._call("Update", request, context)

        def Delete(self, request, context):  # noqa: N802
            return self._call("Delete", request, context)

        def Read(self, request, context):  # noqa: N802
            return self._call("Read", request, context)

        def Check(self, request, context):  # noqa: N802
            return self._call("Check", request, context)

        def Diff(self, request, context):  # noqa: N802
            return self._call("Diff", request, context)

        def Cancel(self, request, context):  # noqa: N802
            runtime.cancelled.set()
            return super().Cancel(request, context)

    return LabProviderServicer


def engine_sink(address: str):
    stub = engine_pb2_grpc.EngineStub(grpc.insecure_channel(address))
    lock = threading.Lock()

    def sink(severity: str, message: str, ephemeral: bool, urn: str) -> None:
        with lock:
            stub.Log(
                engine_pb2.LogRequest(severity=_SEVERITY[severity], message=message, urn=urn, ephemeral=ephemeral),
                timeout=10,
            )

    return sink


def cancel_all() -> None:
    runtime.cancelled.set()
    time.sleep(CANCEL_WAIT_S)  # the runs that saw it end within seconds, putting back what they changed
    end_masters()


def main(argv: list[str]) -> None:
    base, namespace = _sdk_servicer()
    addresses = [a for a in argv if not a.startswith("-") and ":" in a]
    if addresses:
        runtime.set_sink(engine_sink(addresses[0]))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=WORKERS), options=namespace["_GRPC_CHANNEL_OPTIONS"])
    namespace["provider_pb2_grpc"].add_ResourceProviderServicer_to_server(make_servicer(base)(), server)
    port = server.add_insecure_port(address="127.0.0.1:0")
    server.start()
    sys.stdout.buffer.write(f"{port}\n".encode())
    sys.stdout.flush()
    if addresses:
        # The engine killed: cancel what runs (the benchmark puts the guests back), end the SSH
        # masters, exit.
        healthcheck.watch(addresses[0], cleanup=cancel_all)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        runtime.cancelled.set()
        server.stop(0)


if __name__ == "__main__":
    main(sys.argv[1:])
