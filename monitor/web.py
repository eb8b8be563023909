"""The daemon's HTTP endpoint (``http_listen``): /metrics, /healthz, the status page, /api/status.

Served by hypercorn inside the daemon's task group, so it stops with the
daemon. Imported only when ``http_listen`` is set. Everything slow (reading
the state database, rendering, exposition) runs in a worker thread, so a
scrape never delays polling. Metrics use prometheus_client's types in a
registry of the daemon's own.
"""

from __future__ import annotations

import json
import logging
import platform
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.to_thread

from . import __version__
from .errors import MonitorError
from .model import Query, iso_time
from .redact import redact, redact_data

if TYPE_CHECKING:
    from .daemon import Daemon

log = logging.getLogger("monitor.web")

QUERY_LABELS = ("account", "region", "job_type", "engine_id", "project_type")
SPEC_LABELS = ("watch", "region", "job_type", "spec_code", "gpu_type")
POLL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
PAGE_CACHE_SECONDS = 5.0
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def query_labels(query: Query) -> list[str]:
    return [query.account, query.region, query.job_type or "", str(query.engine_id), str(query.project_type)]


class Metrics:
    """prometheus_client metrics for one daemon; most are read from its state at scrape time."""

    def __init__(self, daemon: Daemon):
        from prometheus_client import CollectorRegistry, Histogram, disable_created_metrics

        disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series only clutter a scrape

        self.daemon = daemon
        self.pending = 0
        self.registry = CollectorRegistry()
        self.poll_duration = Histogram(
            "modelarts_poll_duration_seconds",
            "Time one poll of a query took, from sending the request to a parsed answer",
            QUERY_LABELS,
            buckets=POLL_BUCKETS,
            registry=self.registry,
        )
        self.schedule_lag = Histogram(
            "modelarts_schedule_lag_seconds",
            "How late polls start against their schedule (a busy or stalled event loop shows here)",
            buckets=LAG_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_StateCollector(self))

    def observe_poll(self, query: Query, seconds: float) -> None:
        self.poll_duration.labels(*query_labels(query)).observe(seconds)

    def observe_lag(self, query: Query, seconds: float) -> None:
        self.schedule_lag.observe(max(0.0, seconds))

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry))


class _StateCollector:
    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def describe(self) -> list[Any]:
        return []  # collected fresh at every scrape

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        d = self.metrics.daemon
        available = GaugeMetricFamily(
            "modelarts_spec_available",
            "1 if the watched spec has capacity now (no_resource is false), else 0",
            labels=SPEC_LABELS,
        )
        max_num = GaugeMetricFamily(
            "modelarts_spec_max_num", "Most nodes a job may use with the watched spec", labels=SPEC_LABELS
        )
        for w in d.config.watches:
            state = d.states.get(w.name)
            if state is None:
                continue
            for key, spec in sorted(state.specs.items()):
                if not spec.present:
                    continue
                labels = [w.name, w.region, w.job_type or "", key, str(spec.info.get("gpu_type", ""))]
                available.add_metric(labels, 1.0 if spec.available else 0.0)
                max_num.add_metric(labels, float(spec.max_num))
        yield available
        yield max_num

        polls = CounterMetricFamily(
            "modelarts_polls", "Polls of each query, by result", labels=[*QUERY_LABELS, "result"]
        )
        failures = GaugeMetricFamily(
            "modelarts_query_consecutive_failures", "Failed polls in a row of each query", labels=QUERY_LABELS
        )
        last_ok = GaugeMetricFamily(
            "modelarts_query_last_success_timestamp_seconds",
            "Unix time of the last successful poll of each query",
            labels=QUERY_LABELS,
        )
        for rt in d.runtimes.values():
            labels = query_labels(rt.query)
            polls.add_metric([*labels, "success"], float(rt.polls_ok))
            polls.add_metric([*labels, "failure"], float(rt.polls_failed))
            failures.add_metric(labels, float(rt.health.failures))
            if rt.health.last_success_at:
                last_ok.add_metric(labels, rt.health.last_success_at)
        yield polls
        yield failures
        yield last_ok

        notifications = CounterMetricFamily(
            "modelarts_notifications",
            "Deliveries to notifier URLs, by result (sent, failed, dropped)",
            labels=["notifier", "result"],
        )
        for (notifier, result), count in sorted(d.delivery_stats.items()):
            notifications.add_metric([notifier, result], float(count))
        yield notifications
        yield GaugeMetricFamily(
            "modelarts_notifications_pending", "Deliveries waiting in the outbox", value=float(self.metrics.pending)
        )
        info = GaugeMetricFamily(
            "modelarts_build_info", "Build information (always 1)", labels=["version", "python_version"]
        )
        info.add_metric([__version__, platform.python_version()], 1.0)
        yield info


def health(daemon: Daemon) -> tuple[int, dict[str, Any]]:
    """200 when every query polled successfully within two intervals, else 503 with the reasons."""
    now = daemon.clock.time()
    problems = []
    if not daemon.loops_alive():
        problems.append("a polling loop is stalled")
    if daemon.state_error is not None:
        problems.append(f"changes cannot be stored: {daemon.state_error}")
    alert_after = daemon.config.monitor.failure_alert_after
    for rt in daemon.runtimes.values():
        where = rt.query.describe()
        if rt.health.alerted or rt.health.failures >= alert_after:
            problems.append(f"{where}: degraded after {rt.health.failures} failed polls: {rt.health.last_error}")
            continue
        since = rt.health.last_success_at or daemon.started_at
        limit = 2 * rt.interval + daemon.config.monitor.timeout
        if now - since > limit:
            problems.append(f"{where}: no successful poll for {int(now - since)} s (interval {int(rt.interval)} s)")
    if problems:
        return 503, {"status": "unhealthy", "problems": problems}
    last = [rt.health.last_success_at for rt in daemon.runtimes.values() if rt.health.last_success_at]
    return 200, {
        "status": "ok",
        "queries": len(daemon.runtimes),
        "oldest_success": iso_time(min(last)) if last else None,
    }


Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


class WebApp:
    """A small ASGI application: four read-only routes."""

    def __init__(self, daemon: Daemon, metrics: Metrics):
        self.daemon = daemon
        self.metrics = metrics
        # Rendering a large page costs real CPU and memory: one rendering at a time, and
        # requests within a few seconds of it get the same text.
        self._render_lock = anyio.Lock()
        self._cache: dict[str, tuple[float, str]] = {}

    async def _cached(self, what: str, render: Callable[[], str]) -> str:
        async with self._render_lock:
            hit = self._cache.get(what)
            if hit is not None and anyio.current_time() - hit[0] < PAGE_CACHE_SECONDS:
                return hit[1]
            text = await anyio.to_thread.run_sync(render)
            self._cache[what] = (anyio.current_time(), text)
            return text

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1003})  # nothing here speaks websocket
            return
        if scope["type"] != "http":
            return
        status, content_type, body = await self.route(scope["method"], scope["path"])
        headers = [
            (b"content-type", content_type.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
            (b"x-content-type-options", b"nosniff"),
        ]
        if status == 405:
            headers.append((b"allow", b"GET, HEAD"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})

    async def route(self, method: str, path: str) -> tuple[int, str, bytes]:
        if method not in ("GET", "HEAD"):
            return 405, "text/plain; charset=utf-8", b"method not allowed\n"
        try:
            if path == "/metrics":
                return await self.metrics_page()
            if path == "/healthz":
                code, data = health(self.daemon)
                return code, "application/json", json.dumps(data).encode()
            if path in ("/", "/index.html"):
                html = await self._cached("page", self._render_page)
                return 200, "text/html; charset=utf-8", html.encode()
            if path == "/api/status":
                text = await self._cached("json", self._render_json)
                return 200, "application/json", text.encode()
        except MonitorError as exc:
            return 503, "text/plain; charset=utf-8", f"{exc}\n".encode()
        return 404, "text/plain; charset=utf-8", b"not found: try /, /api/status, /metrics or /healthz\n"

    async def metrics_page(self) -> tuple[int, str, bytes]:
        from prometheus_client import CONTENT_TYPE_LATEST

        store = self.daemon.store
        if store is not None:
            self.metrics.pending = await self.daemon.db(store.pending_count)
        body = await anyio.to_thread.run_sync(self.metrics.exposition)
        return 200, CONTENT_TYPE_LATEST, body

    def _status(self) -> dict[str, Any]:
        from .status import collect_status

        return collect_status(self.daemon.config, self.daemon.clock.time(), timelines=True)

    def _render_page(self) -> str:
        from .page import render_status_page

        page = render_status_page(self._status(), failure_alert_after=self.daemon.config.monitor.failure_alert_after)
        return redact(page)

    def _render_json(self) -> str:
        data = self._status()
        for item in data["pending"]:
            item.pop("url", None)  # not even masked: the page and its JSON show notifier names only
        return json.dumps(redact_data(data), ensure_ascii=False)


def check_listen(host: str, port: int) -> None:
    """Fail early and clearly if the address cannot be used (hypercorn's own error is a traceback)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise MonitorError(f"cannot listen on {host}:{port} (http_listen): {exc.strerror or exc}") from None


async def serve_web(daemon: Daemon, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config as HyperConfig

    assert daemon.config.monitor.http_listen is not None
    host, port = daemon.config.monitor.http_listen
    check_listen(host, port)
    config = HyperConfig()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")  # its "Running on ..." is ours to say
    config.graceful_timeout = 2.0
    config.include_server_header = False
    metrics = Metrics(daemon)
    daemon.metrics = metrics
    task_status.started()
    log.info("status page, /metrics and /healthz on http://%s:%d/", f"[{host}]" if ":" in host else host, port)
    try:
        # hypercorn shuts down gracefully when the daemon starts stopping; the daemon waits for
        # that before it cancels its task group (a cancelled hypercorn shutdown trips over itself).
        await serve(WebApp(daemon, metrics), config, shutdown_trigger=daemon.stopping.wait)  # type: ignore[arg-type]
    finally:
        daemon.web_stopped.set()
