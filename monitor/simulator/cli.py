"""``modelarts-monitor simulate``: serve the simulator on a loopback port until stopped."""

from __future__ import annotations

import signal
import sys

from ..errors import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, EXIT_USAGE


def parse_listen(text: str) -> tuple[str, int] | None:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 <= int(port) < 65536:
        return None
    return host, int(port)


def simulate(listen: str, scenario_path: str | None) -> int:
    import anyio

    from ..httpserver import HttpServer
    from .scenario import ScenarioError, load_scenario
    from .server import Simulator

    address = parse_listen(listen)
    if address is None:
        print(f"error: --listen: expected HOST:PORT such as 127.0.0.1:8086, got {listen!r}", file=sys.stderr)
        return EXIT_USAGE
    try:
        scenario = load_scenario(scenario_path)
    except ScenarioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    sim = Simulator(scenario)

    async def handle_and_log(request):  # type: ignore[no-untyped-def]
        response = await sim.handle(request)
        print(f"{request.method} {request.target} -> {response.status}", flush=True)
        return response

    async def main() -> int:
        server = HttpServer(handle_and_log, address[0], address[1])
        async with anyio.create_task_group() as tg:
            try:
                await tg.start(server.serve)
            except OSError as exc:
                print(f"error: cannot listen on {listen}: {exc.strerror or exc}", file=sys.stderr)
                return EXIT_FAILURE
            print(f"ModelArts/IAM simulator listening on {server.url}")
            for acc in scenario.accounts:
                if acc.access_key:
                    print(f'  AK/SK account: access_key = "{acc.access_key}", secret_key = "{acc.secret_key}"')
                if acc.username:
                    print(
                        f'  password account: domain = "{acc.domain}", username = "{acc.username}", '
                        f'password = "{acc.password}"'
                    )
            for p in scenario.projects:
                print(f"  project {p.name}: {p.id}")
            print(f'  in [accounts.NAME] write endpoint = "{server.url}" and iam_endpoint = "{server.url}"')
            print("Ctrl-C stops.", flush=True)
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    break
            tg.cancel_scope.cancel()
        return EXIT_OK

    return anyio.run(main)
