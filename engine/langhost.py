"""A Python language host for the pulumi CLI, built on the Python SDK's own LanguageServer.

The Go `pulumi-language-python` module is not served by the Go module proxy these machines reach,
so the lab ships this one. It does what the CLI needs for preview/up/destroy/refresh: the CLI
starts it with the engine's address, reads the port it prints, and calls Run; Run executes the
project's __main__.py in this process through the SDK (the same path the Automation API uses for
inline programs). It reports no plugins: the lab's resources are Python dynamic providers.
"""

from __future__ import annotations

import importlib.util
import os
import runpy
import signal
import sys
from concurrent import futures

import grpc
from pulumi.automation._server import LanguageServer
from pulumi.runtime.proto import language_pb2_grpc, plugin_pb2


def _healthcheck():
    """engine/healthcheck.py, loaded by its path: this host runs as a script, and the project's own
    directory must not go onto sys.path ahead of the program's (a second checkout's program would
    import this one's modules)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "healthcheck.py")
    spec = importlib.util.spec_from_file_location("_l2dsr_engine_healthcheck", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


healthcheck = _healthcheck()

VERSION = "3.274.1-l2dsr"


class ProjectLanguageServer(LanguageServer):
    def __init__(self, engine_address: str) -> None:
        super().__init__(program=self._run_main)
        self.engine_address = engine_address
        self.program_dir = os.getcwd()

    def Run(self, request, context):  # noqa: N802 (gRPC method name)
        self.program_dir = request.info.program_directory or request.pwd or os.getcwd()
        if request.pwd:
            os.chdir(request.pwd)
        # The SDK's server takes the engine address from the first program argument.
        del request.args[:]
        request.args.append(self.engine_address)
        result = super().Run(request, context)
        if result.error:
            # The SDK has logged the error already (under the stack): tell the CLI it was reported,
            # so it does not print it a second time as "an unhandled error occurred".
            result.bail = True
            result.error = ""
        return result

    def _run_main(self) -> None:
        if self.program_dir not in sys.path:
            sys.path.insert(0, self.program_dir)
        runpy.run_path(os.path.join(self.program_dir, "__main__.py"), run_name="__main__")

    def GetPluginInfo(self, request, context):  # noqa: N802
        return plugin_pb2.PluginInfo(version=VERSION)


def main(argv: list[str]) -> None:
    positional = [a for a in argv if not a.startswith("-")]
    if not positional:
        sys.exit("usage: pulumi-language-python [flags] ENGINE_ADDRESS")
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4),
        options=[("grpc.max_receive_message_length", 400 * 1024 * 1024)],
    )
    language_pb2_grpc.add_LanguageRuntimeServicer_to_server(ProjectLanguageServer(positional[-1]), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    healthcheck.watch(positional[-1])  # the engine killed: this host ends too
    # The CLI ends its plugins with SIGINT when it is done with them: stop quietly.
    signal.signal(signal.SIGINT, lambda *_: server.stop(grace=None))
    print(port, flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main(sys.argv[1:])
