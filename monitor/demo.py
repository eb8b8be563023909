"""``modelarts-monitor demo``: the whole product on loopback, alerts shown as they arrive.

The simulator (with the built-in scenario, where capacity comes and goes every
minute), a local HTTP receiver standing in for Slack, and the daemon, all in
one task group. Alerts travel the real path: detection, the SQLite outbox,
apprise's ``json://`` plugin, HTTP to the receiver, which prints them.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from .errors import EXIT_OK, EXIT_USAGE

DEMO_CONFIG = """\
# The demo's configuration: written by `modelarts-monitor demo`, read by the daemon.
[monitor]
interval = "5s"
jitter = "5%"
timeout = "5s"
state_dir = "{state_dir}"
failure_alert_after = 3
log_format = "text"
log_level = "warning"

[accounts.demo]
auth = "aksk"
access_key = "{access_key}"
# The simulator's published demo key (so a kept configuration works on its own).
secret_key = "{secret_key}"
endpoint = "{endpoint}"
iam_endpoint = "{endpoint}"

[notifiers.terminal]
urls = ["json://{receiver}/alerts"]

[[watch]]
name = "gpu-train-cn-north-4"
region = "cn-north-4"
# project_id is left out: it is looked up through (the simulated) IAM
job_type = "train"
min_gpu_num = 1
notify = ["terminal"]
"""

_BOLD = "\033[1m"
_DIM = "\033[2m"
_GREEN = "\033[32m"
_RED = "\033[31m"
_RESET = "\033[0m"


def _style(text: str, *codes: str) -> str:
    if not sys.stdout.isatty() or os.environ.get("NO_COLOR"):
        return text
    return "".join(codes) + text + _RESET


def print_alert(title: str, body: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    colour = _GREEN if " available" in title or "started" in title else _RED if "sold out" in title else ""
    print(_style(f"── {stamp} ── {title}", _BOLD, colour), flush=True)
    for line in body.splitlines():
        print("   " + line.replace("**", "").replace("`", ""), flush=True)
    print(flush=True)


def run_demo(duration: str | None = None, keep: str | None = None) -> int:
    import anyio

    seconds = None
    if duration is not None:
        from .durations import parse_duration

        try:
            seconds = parse_duration(duration)
        except ValueError as exc:
            print(f"error: --duration: {exc}", file=sys.stderr)
            return EXIT_USAGE
    if keep:
        workdir = Path(keep).expanduser()
        config = workdir / "config.toml"
        try:
            workdir.mkdir(parents=True, exist_ok=True)
            if config.exists() and not config.read_text(errors="replace").startswith(DEMO_CONFIG.splitlines()[0]):
                print(
                    f"error: --keep {keep}: {config} exists and is not a demo configuration; choose another directory",
                    file=sys.stderr,
                )
                return EXIT_USAGE
            probe = workdir / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            print(f"error: --keep {keep}: cannot use it as a directory: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_USAGE
        return anyio.run(_demo, workdir, seconds)
    with tempfile.TemporaryDirectory(prefix="modelarts-monitor-demo-") as tmp:
        return anyio.run(_demo, Path(tmp), seconds)


async def _demo(workdir: Path, seconds: float | None) -> int:
    import anyio

    from .config import load_config
    from .daemon import Daemon
    from .httpserver import HttpServer, Request, Response
    from .logs import setup_logging
    from .simulator import Simulator, load_scenario

    scenario = load_scenario()
    sim = Simulator(scenario)
    account = scenario.accounts[0]
    alerts = 0

    stop_demo = anyio.Event()

    async def receive(request: Request) -> Response:
        nonlocal alerts
        try:
            data = json.loads(request.body)
            print_alert(str(data.get("title", "")), str(data.get("message", "")))
            alerts += 1
        except ValueError:
            return Response.text("bad json", 400)
        except OSError:  # the terminal or pipe is gone (`demo | head`): nobody is watching
            _silence_stdout()
            stop_demo.set()
        return Response.text("ok")

    simulator = HttpServer(sim.handle)
    receiver = HttpServer(receive)
    async with anyio.create_task_group() as tg:
        await tg.start(simulator.serve)
        await tg.start(receiver.serve)
        state_dir = workdir / "state"
        config_path = workdir / "config.toml"
        config_path.write_text(
            DEMO_CONFIG.format(
                secret_key=account.secret_key,
                state_dir=state_dir,
                access_key=account.access_key,
                endpoint=simulator.url,
                receiver=f"127.0.0.1:{receiver.port}",
            )
        )
        config_path.chmod(0o600)
        config = load_config(config_path)
        setup_logging("text", "warning")
        print(_style("modelarts-monitor demo", _BOLD))
        print(f"  simulated ModelArts + IAM  {simulator.url}  (capacity changes every few seconds)")
        print(f"  alert receiver             http://127.0.0.1:{receiver.port}/alerts  (stands in for Slack)")
        print(f"  configuration              {config_path}")
        print(_style("  The first message is the baseline; a capacity alert follows within ~10 s. Ctrl-C stops.", _DIM))
        print(flush=True)
        daemon = Daemon(config)

        async def stop_on_signal() -> None:
            # Ctrl-C may arrive twice (from the terminal and passed on by tasks.py): keep
            # listening, so the second one cannot interrupt the clean stop.
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    daemon.stop()

        async def stop_when_unwatched() -> None:
            await stop_demo.wait()
            daemon.stop()

        async def stop_after(delay: float) -> None:
            await anyio.sleep(delay)
            daemon.stop()

        tg.start_soon(stop_on_signal)
        tg.start_soon(stop_when_unwatched)
        if seconds is not None:
            tg.start_soon(stop_after, seconds)
        await daemon.run()
        tg.cancel_scope.cancel()
    try:
        print(
            f"demo stopped: {alerts} alerts received. "
            "Next: copy config.example.toml, add your keys, and run `modelarts-monitor check`."
        )
    except OSError:
        _silence_stdout()
    return EXIT_OK


def _silence_stdout() -> None:
    """Point stdout at /dev/null so nothing more (not even the final flush) fails on a closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass
