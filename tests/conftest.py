"""Shared fixtures: the simulator and real receivers (SMTP, Slack, JSON) on loopback.

Servers run in a background thread with their own event loop (an anyio
blocking portal), so both in-process async tests and daemon subprocesses can
talk to them over real sockets. Receivers record what arrived and let a test
wait for it with a deadline, never a sleep.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal

from monitor import redact
from monitor.httpserver import HttpServer, Request, Response
from monitor.simulator import Simulator, load_scenario

DEMO_AK = "DEMOACCESSKEY0000001"
DEMO_SK = "demo-secret-key-0123456789abcdef"
PROJECT = "0123456789abcdef0123456789abcdef"
DEADLINE = 20.0


def wait_for(predicate: Callable[[], Any], timeout: float = DEADLINE, what: str = "condition") -> Any:
    """Poll ``predicate`` until it is truthy or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def portal() -> Iterator[BlockingPortal]:
    with start_blocking_portal() as p:
        yield p
        p.call(p.stop, True)  # cancel servers still running


SLACK_TOKEN = "slacksecrettoken000000001"
# Secrets the tests configure; none may ever show in any output.
TEST_SECRETS = {"demo-secret-key-0123456789abcdef", "DEMOACCESSKEY0000001", SLACK_TOKEN}
OUTPUTS: list[list[str]] = []  # output lines of every process a test started


@pytest.fixture(autouse=True)
def _no_secret_in_any_output(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """After each test: no configured secret in its log records or its processes' output."""
    redact.clear()
    OUTPUTS.clear()
    yield
    secrets = (TEST_SECRETS | redact.registered()) - {""}
    # DEBUG records are what a log at log_level = "debug" shows, redacted on the way out
    # (tests/test_secrets.py runs that path); below that level nothing unredacted may be logged.
    texts = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    texts += [line for lines in OUTPUTS for line in lines]
    leaks = [(s, t) for t in texts for s in secrets if s in t]
    redact.clear()
    assert not leaks, f"secrets leaked into output: {leaks[:3]}"


@pytest.fixture(autouse=True)
def _no_apprise_throttle() -> None:
    """apprise sleeps between sends through one plugin instance; tests need no such pause."""
    from apprise.manager_plugins import NotificationManager

    for plugin in NotificationManager().plugins():
        plugin.request_rate_per_sec = 0


def serve_in_thread(portal: BlockingPortal, handler: Any) -> HttpServer:
    """Serve ``handler`` from the portal's thread; ``server.stop()`` ends it."""
    import anyio

    server = HttpServer(handler)
    box: dict[str, anyio.CancelScope] = {}

    async def run() -> None:
        with anyio.CancelScope() as scope:
            box["scope"] = scope
            await server.serve()

    portal.start_task_soon(run)
    wait_for(lambda: server.port != 0, 5, "server to listen")
    server.stop = lambda: portal.call(box["scope"].cancel)  # type: ignore[attr-defined]
    return server


@dataclass
class SimHandle:
    sim: Simulator
    server: HttpServer

    @property
    def url(self) -> str:
        return self.server.url

    def spec_requests(self) -> int:
        return len(self.sim.records("/job/resource-specs"))


@pytest.fixture
def sim(portal: BlockingPortal) -> Iterator[SimHandle]:
    """The simulator with a fixed scenario: no timeline, tests change capacity themselves."""
    scenario = load_scenario()
    for spec in scenario.specs:
        spec.timeline = []
    s = Simulator(scenario)
    server = serve_in_thread(portal, s.handle)
    yield SimHandle(s, server)
    server.stop()  # type: ignore[attr-defined]


class HttpReceiver:
    """Records POSTed bodies; answers with ``reply`` (default 200 "ok")."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self.status = 200
        self.reply = "ok"
        self.hang = False
        self.delay = 0.0  # seconds to wait before answering (the request is recorded at once)
        self.server: HttpServer | None = None

    async def handle(self, request: Request) -> Response:
        with self.lock:
            status, reply, hang = self.status, self.reply, self.hang
        if hang:
            import anyio

            await anyio.sleep(3600)  # a receiver that never answers; nothing is recorded
        if status == 200:
            with self.lock:
                self.requests.append(request)
        if self.delay:
            import anyio

            await anyio.sleep(self.delay)
        return Response.text(reply, status)

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(r.body) for r in self.requests]

    def wait(self, count: int, timeout: float = DEADLINE) -> list[dict[str, Any]]:
        wait_for(lambda: len(self.requests) >= count, timeout, f"{count} requests at the receiver")
        return self.bodies()


@pytest.fixture
def webhook(portal: BlockingPortal) -> Iterator[HttpReceiver]:
    """A json:// receiver: apprise posts {"title", "message", ...}."""
    receiver = HttpReceiver()
    receiver.server = serve_in_thread(portal, receiver.handle)
    yield receiver
    receiver.server.stop()  # type: ignore[attr-defined]


@pytest.fixture
def slack(portal: BlockingPortal, monkeypatch: pytest.MonkeyPatch) -> Iterator[HttpReceiver]:
    """A stand-in for Slack's webhook host, reached by apprise's real Slack plugin."""
    from apprise.plugins.slack import NotifySlack

    receiver = HttpReceiver()
    receiver.server = serve_in_thread(portal, receiver.handle)
    monkeypatch.setattr(NotifySlack, "webhook_url", f"http://127.0.0.1:{receiver.port}/services")
    yield receiver
    receiver.server.stop()  # type: ignore[attr-defined]


SLACK_URL = f"slack://T0000TEST/B0000TEST/{SLACK_TOKEN}/#gpu-alerts"


@dataclass
class SmtpSink:
    port: int
    messages: list[EmailMessage] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait(self, count: int, timeout: float = DEADLINE) -> list[EmailMessage]:
        wait_for(lambda: len(self.messages) >= count, timeout, f"{count} emails")
        with self.lock:
            return list(self.messages)

    @property
    def url(self) -> str:
        return f"mailto://127.0.0.1:{self.port}?mode=insecure&from=monitor@example.com&to=oncall@example.com&cto=5"


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    """A real SMTP server on loopback (aiosmtpd)."""
    from aiosmtpd.controller import Controller

    sink = SmtpSink(0)

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            msg = message_from_bytes(envelope.content, policy=policy.default)
            with sink.lock:
                sink.messages.append(msg)  # type: ignore[arg-type]
            return "250 OK"

    sink.port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=sink.port)
    controller.start()
    yield sink
    controller.stop()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def email_text(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("plain",))
    assert part is not None
    return part.get_content()


# -- configuration files -----------------------------------------------------------------------
def write_config(
    tmp_path: Path,
    sim_url: str,
    *,
    notifiers: str,
    watches: str,
    monitor: str = "",
    account: str = "",
    interval: str = "5s",
) -> Path:
    state = tmp_path / "state"
    text = (
        textwrap.dedent(f"""\
        [monitor]
        interval = "{interval}"
        jitter = "0%"
        timeout = "5s"
        state_dir = "{state}"
        {monitor}

        [accounts.sim]
        access_key = "{DEMO_AK}"
        secret_key = "{DEMO_SK}"
        endpoint = "{sim_url}"
        iam_endpoint = "{sim_url}"
        {account}

        """)
        + textwrap.dedent(notifiers)
        + "\n"
        + textwrap.dedent(watches)
    )
    path = tmp_path / "config.toml"
    path.write_text(text)
    path.chmod(0o600)
    return path


V100_WATCH = """
    [[watch]]
    name = "v100"
    region = "cn-north-4"
    job_type = "train"
    gpu_types = ["v100"]
    """


def hook_config(
    tmp_path: Path,
    sim: SimHandle,
    webhook: HttpReceiver,
    *,
    url_suffix: str = "",
    extra_notifiers: str = "",
    extra_watches: str = "",
    **kwargs: Any,
) -> Path:
    """The usual configuration: one json:// notifier ("hook") to ``webhook`` and the "v100" watch."""
    notifiers = f"""
        [notifiers.hook]
        urls = ["json://127.0.0.1:{webhook.port}/alerts{url_suffix}"]
        """
    return write_config(
        tmp_path,
        sim.url,
        notifiers=textwrap.dedent(notifiers) + textwrap.dedent(extra_notifiers),
        watches=textwrap.dedent(V100_WATCH) + textwrap.dedent(extra_watches),
        **kwargs,
    )


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_SOCKET", "WATCHDOG_"))}
    env.update(extra)
    return env


MONITOR = [sys.executable, "-m", "monitor"]


async def eventually(predicate: Callable[[], Any], timeout: float = DEADLINE, what: str = "condition") -> Any:  # noqa: ASYNC109
    """The async twin of wait_for: poll without blocking the event loop."""
    import anyio

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await anyio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(config: Any, **kwargs: Any) -> AsyncIterator[Any]:
    """A Daemon running in the current event loop; stopped (cleanly) on exit."""
    import anyio

    from monitor.daemon import Daemon

    daemon = Daemon(config, **kwargs)
    async with anyio.create_task_group() as tg:
        tg.start_soon(daemon.run)
        with anyio.fail_after(10):
            await daemon.ready.wait()
        try:
            yield daemon
        finally:
            daemon.stop()
            with anyio.fail_after(15):
                await daemon.stopped.wait()
