"""The daemon: one task group, one loop per query, one delivery loop.

Structure (as healthchecks' sendalerts): :meth:`Daemon.run_cycle` polls one
query once, detects, commits and queues messages, and tests call it directly;
the per-query loop only waits and calls it. Blocking work (SQLite, apprise)
runs in threads. SIGTERM/SIGINT stop polling and give pending deliveries up
to 10 s; SIGHUP reloads the configuration.
"""

from __future__ import annotations

import logging
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread

from . import __version__
from .api.client import SKEW_ALERT, ModelArtsClient, build_http_client
from .config import Config, Watch, load_config
from .detect import PollResult, QueryHealth, WatchState, new_event, process_poll
from .durations import format_duration
from .errors import ConfigError, DeliveryError, PollError, StateError
from .model import CLOCK_SKEW, Query, Snapshot
from .notify import AppriseNotifier
from .render import render_digest, render_message
from .schedule import (
    DELIVERY_GIVE_UP,
    delivery_retry_delay,
    first_poll_delay,
    next_poll,
    poll_backoff,
    quiet_until,
)
from .sdnotify import SystemdNotifier
from .signals import early_reload_requested
from .store import Delivery, Outgoing, SqliteStore
from .urls import check_apprise_config, check_url

log = logging.getLogger("monitor")

STOP_GRACE = 10.0  # SPEC: give pending deliveries up to 10 s on stop
HEALTH_FLUSH_EVERY = 30.0
DELIVERY_BOOKKEEPING_RETRY = 30.0
STATUS_EVERY = 2.0
LAST_SEND_MARGIN = (
    4.0  # no send starts in the last seconds of the stop's grace period  # at most this often a STATUS= line to systemd
)
STATE_ALERT_AFTER = 3  # failed commits in a row before the team is told directly
DELIVERY_CONCURRENCY = 8
PRUNE_EVERY = 3600.0


class Clock:
    """Wall time for events, monotonic time for schedules, and sleeping."""

    scale = 1.0

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(0.0, seconds))


class ScaledClock(Clock):
    """A clock that runs ``scale`` times faster than real time (tests of long waits)."""

    def __init__(self, scale: float, start: float | None = None):
        self.scale = scale
        self._t0 = time.time() if start is None else start
        self._m0 = time.monotonic()

    def time(self) -> float:
        return self._t0 + (time.monotonic() - self._m0) * self.scale

    def monotonic(self) -> float:
        return self._m0 + (time.monotonic() - self._m0) * self.scale

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(0.0, seconds) / self.scale)


@dataclass
class QueryRuntime:
    """The live state of one query's loop."""

    query: Query
    watches: list[Watch]
    interval: float
    health: QueryHealth
    snapshot: Snapshot | None
    scope: anyio.CancelScope | None = None
    next_due: float | None = None
    heartbeat: float = field(default_factory=time.monotonic)  # last sign of life of the loop
    in_cycle_since: float | None = None
    polls_ok: int = 0
    polls_failed: int = 0
    last_duration: float | None = None
    last_lag: float | None = None  # how late the last poll started against its schedule


def _delivery_lane(d: Delivery) -> tuple[str, str]:
    return (d.watch, d.url_key)


class Daemon:
    def __init__(
        self,
        config: Config,
        *,
        clock: Clock | None = None,
        transport: Any = None,
        notifier: AppriseNotifier | None = None,
        sd: SystemdNotifier | None = None,
        rng: random.Random | None = None,
        tz: Any = None,
    ):
        self.config = config
        self.clock = clock or Clock()
        self._transport = transport  # an httpx transport, for in-process tests
        self.notifier = notifier or AppriseNotifier(config.notifiers)
        self.sd = sd or SystemdNotifier()
        self.rng = rng or random.Random()
        self.tz = tz
        self.store: SqliteStore | None = None
        self.clients: dict[str, ModelArtsClient] = {}
        self.runtimes: dict[str, QueryRuntime] = {}
        self.states: dict[str, WatchState | None] = {}
        self.limiter = anyio.CapacityLimiter(config.monitor.max_concurrency)
        self.db_limiter = anyio.CapacityLimiter(1)
        self.ready = anyio.Event()
        self.stopped = anyio.Event()
        self._stop_requested = anyio.Event()
        self._hurry = anyio.Event()  # a second stop signal: skip the grace period
        self._no_new_sends = False  # the end of the stop's grace period is near
        self._deliver_wake = anyio.Event()
        self._commit_lock = anyio.Lock()
        self._tg: anyio.abc.TaskGroup | None = None
        self._in_flight: set[tuple[str, str]] = set()
        self.cycles = 0
        self.delivered = 0
        self.delivery_failures = 0
        self.dropped = 0
        self._last_heartbeat = 0.0
        self.started_at = time.time()
        self._skew_alerted: dict[str, set[str]] = {}
        self.metrics: Any = None  # set by the web endpoint when http_listen is on
        self.delivery_stats: Counter[tuple[str, str]] = Counter()  # (notifier, sent|failed|dropped)
        self.stopping = anyio.Event()
        self.web_stopped = anyio.Event()
        self._dirty_health: dict[str, QueryHealth] = {}  # quiet polls not yet written
        self._status_sent = -STATUS_EVERY
        self._state_failures = 0  # consecutive failed commits
        self.state_error: str | None = None  # why the last commit failed, until one succeeds
        self._state_alerted = False
        self._unrecorded: set[int] = set()  # delivered, but the outbox could not be told
        self._lane_hold: dict[tuple[str, str], float] = {}  # lanes whose retry could not be stored

    # -- lifecycle ----------------------------------------------------------------------------
    async def run(self, *, handle_signals: bool = False) -> None:
        """Run until :meth:`stop` (or SIGTERM/SIGINT when ``handle_signals``)."""
        try:
            self.store = await anyio.to_thread.run_sync(SqliteStore.open, self.config.monitor.state_dir)
            await self.build_clients()
            await self._load_runtimes(list(self.config.queries().items()))
            await self.remember_clock_alerts()
            async with anyio.create_task_group() as tg:
                self._tg = tg
                if handle_signals:
                    await tg.start(self._signals)
                for rt in self.runtimes.values():
                    self._start_loop(rt)
                tg.start_soon(self._deliver_loop)
                tg.start_soon(self._maintenance_loop)
                if self.sd.watchdog_interval:
                    tg.start_soon(self._watchdog_loop)
                if self.config.monitor.http_listen:
                    from .web import serve_web

                    await tg.start(serve_web, self)
                self.sd.ready(self._status_line())
                log.info(
                    "modelarts-monitor %s started: %d watches, %d queries, state in %s",
                    __version__,
                    len(self.config.watches),
                    len(self.runtimes),
                    self.store.path,
                )
                self.ready.set()
                await self._stop_requested.wait()
                self.stopping.set()
                self.sd.stopping()
                log.info("stopping: polling stopped, finishing deliveries (up to %ds)", STOP_GRACE)
                for rt in self.runtimes.values():
                    if rt.scope is not None:
                        rt.scope.cancel()
                with anyio.move_on_after(STOP_GRACE) as grace:
                    async with anyio.create_task_group() as drain:

                        async def hurry() -> None:
                            await self._hurry.wait()
                            grace.cancel()

                        drain.start_soon(hurry)
                        await self._drain()
                        drain.cancel_scope.cancel()
                if self.config.monitor.http_listen:
                    with anyio.move_on_after(5):
                        await self.web_stopped.wait()
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self.flush_health()
                for client in self.clients.values():
                    await client.http.aclose()
                if self.store is not None:
                    self.store.close()
                self.sd.close()
            self.stopped.set()
        log.info("stopped")

    def stop(self) -> None:
        self._stop_requested.set()

    async def _signals(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """SIGHUP reloads (in its own task, so a slow reload never delays a stop); SIGTERM and
        SIGINT stop; a second one stops at once, without waiting for deliveries."""
        assert self._tg is not None
        reload_lock = anyio.Lock()

        async def reload() -> None:
            async with reload_lock:
                await self.reload_from_file()

        try:
            await self._receive_signals(reload, task_status)
        finally:
            # The receiver puts back the default handlers (which kill); the daemon is stopping
            # anyway, so a late signal must not turn a clean stop into a killed one.
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(signum, signal.SIG_IGN)

    async def _receive_signals(self, reload: Callable[[], Any], task_status: anyio.abc.TaskStatus[None]) -> None:
        assert self._tg is not None
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            task_status.started()
            if early_reload_requested():
                self._tg.start_soon(reload)
            async for signum in signals:
                if signum == signal.SIGHUP:
                    if not self._stop_requested.is_set():
                        self._tg.start_soon(reload)
                elif self._stop_requested.is_set():
                    log.warning("received %s again: stopping now", signal.Signals(signum).name)
                    self._hurry.set()
                else:
                    log.info("received %s", signal.Signals(signum).name)
                    self.stop()

    async def build_clients(self) -> None:
        old = self.clients
        self.clients = {}
        for name, account in self.config.accounts.items():
            previous = old.pop(name, None)
            if previous is not None and previous.account == account and previous.timeout == self.config.monitor.timeout:
                self.clients[name] = previous
                continue
            http = build_http_client(account, self.config.monitor.timeout, self.config.monitor.max_concurrency * 2)
            if self._transport is not None:
                import httpx

                http = httpx.AsyncClient(transport=self._transport, timeout=self.config.monitor.timeout)
            self.clients[name] = ModelArtsClient(account, http, timeout=self.config.monitor.timeout)
            if previous is not None:
                old[name] = previous
        # A poll may still be using a replaced client: close it once such a poll is surely over.
        for client in old.values():
            if self._tg is None:
                await client.http.aclose()
            else:
                self._tg.start_soon(self._close_later, client)

    async def _close_later(self, client: ModelArtsClient) -> None:
        with anyio.move_on_after(self.config.monitor.timeout * 3 + 5):
            await self._stop_requested.wait()
        with anyio.CancelScope(shield=True):
            await client.http.aclose()

    async def _load_runtimes(self, queries: list[tuple[Query, list[Watch]]]) -> None:
        assert self.store is not None
        store = self.store
        names = [w.name for _, ws in queries for w in ws]
        states = await self.db(store.load_watch_states, names)
        for name in names:
            if name not in self.states:
                self.states[name] = states.get(name)
        for query, watches in queries:
            if query.key in self.runtimes:
                continue
            health, snapshot = await self.db(store.load_query, query.key)
            self.runtimes[query.key] = QueryRuntime(
                query=query,
                watches=list(watches),
                interval=self.config.query_interval(query),
                health=health,
                snapshot=snapshot,
            )

    async def db(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(fn, *args, limiter=self.db_limiter)

    # -- reload -------------------------------------------------------------------------------
    async def reload_from_file(self) -> bool:
        """SIGHUP: re-read the file; on any problem keep the running configuration."""
        self.sd.reloading()
        path = self.config.path
        log.info("reloading the configuration from %s", path)
        try:
            config = await anyio.to_thread.run_sync(
                lambda: load_config(path, url_checker=check_url, config_checker=check_apprise_config)
            )
            notifier = AppriseNotifier(config.notifiers)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("reload rejected: %s", problem)
            log.error("reload rejected: the previous configuration keeps running")
            self.sd.ready(self._status_line())
            return False
        except Exception as exc:
            log.error(
                "reload rejected (%s: %s): the previous configuration keeps running",
                type(exc).__name__,
                exc,
                exc_info=True,
            )
            self.sd.ready(self._status_line())
            return False
        for warning in config.warnings:
            log.warning("%s", warning)
        old = self.config.monitor
        if config.monitor.state_dir != old.state_dir:
            log.warning(
                "state_dir changed to %s: that takes a restart; still using %s", config.monitor.state_dir, old.state_dir
            )
            config = replace(config, monitor=replace(config.monitor, state_dir=old.state_dir))
        if config.monitor.http_listen != old.http_listen:
            log.warning("http_listen changed: that takes a restart")
        if (config.monitor.log_format, config.monitor.log_level) != (old.log_format, old.log_level):
            from .logs import setup_logging

            setup_logging(config.monitor.log_format, config.monitor.log_level)
        await self.apply_config(config, notifier)
        self.sd.ready(self._status_line())
        return True

    async def apply_config(self, config: Config, notifier: AppriseNotifier | None = None) -> None:
        """Switch to ``config``; unchanged watches keep their state."""
        async with self._commit_lock:
            old = self.config
            self.config = config
            self.notifier = notifier or AppriseNotifier(config.notifiers)
            self.limiter.total_tokens = config.monitor.max_concurrency
            await self.build_clients()
            queries = config.queries()
            wanted = {q.key: (q, ws) for q, ws in queries.items()}
            for key in list(self.runtimes):
                if key not in wanted:
                    rt = self.runtimes.pop(key)
                    if rt.scope is not None:
                        rt.scope.cancel()
            new = [(q, ws) for key, (q, ws) in wanted.items() if key not in self.runtimes]
            names = {w.name for w in config.watches}
            for gone in [n for n in self.states if n not in names]:
                del self.states[gone]
            for w in config.watches:
                if w.name not in self.states:
                    self.states[w.name] = None
            assert self.store is not None
            forgotten = await self.db(self.store.forget_watches, sorted(names))
            await self._load_runtimes(new)
            for key, (query, watches) in wanted.items():
                rt = self.runtimes[key]
                rt.watches = list(watches)
                interval = config.query_interval(query)
                if interval != rt.interval and rt.next_due is not None:
                    rt.next_due = min(rt.next_due, self.clock.monotonic() + interval)
                rt.interval = interval
            if self._tg is not None:
                for q, _ in new:
                    self._start_loop(self.runtimes[q.key])
            added = sorted(names - {w.name for w in old.watches})
            removed = sorted({w.name for w in old.watches} - names)
            log.info(
                "configuration reloaded: %d watches (%s added, %s removed), %d queries",
                len(config.watches),
                ", ".join(added) or "none",
                ", ".join(removed) or "none",
                len(self.runtimes),
            )
            if forgotten:
                log.info("forgot the state of removed watches: %s", ", ".join(forgotten))
        self._deliver_wake.set()

    # -- polling ------------------------------------------------------------------------------
    def _start_loop(self, rt: QueryRuntime) -> None:
        assert self._tg is not None
        rt.scope = anyio.CancelScope()
        self._tg.start_soon(self._query_loop, rt, rt.scope)

    async def _query_loop(self, rt: QueryRuntime, scope: anyio.CancelScope) -> None:
        with scope:
            jitter = self.config.monitor.jitter
            base = self.clock.monotonic()
            delay = first_poll_delay(rt.interval, jitter, self.rng)
            if rt.health.retry_at is not None:
                # A backoff from before a restart still holds: restarting must not hammer a
                # failing API (or get a rejected key locked).
                delay = max(delay, rt.health.retry_at - self.clock.time())
            rt.next_due = base = base + delay
            while True:
                rt.heartbeat = self.clock.monotonic()
                wait = rt.next_due - self.clock.monotonic()
                if wait > 0:
                    await self.clock.sleep(wait)
                    # A reload may have moved next_due earlier or later while we slept.
                    if rt.next_due - self.clock.monotonic() > 0.001:
                        continue
                rt.in_cycle_since = self.clock.monotonic()
                rt.heartbeat = rt.in_cycle_since
                rt.last_lag = rt.in_cycle_since - rt.next_due
                if self.metrics is not None:
                    self.metrics.observe_lag(rt.query, rt.last_lag)
                try:
                    result = await self.run_cycle(rt.query)
                except Exception:
                    log.error(
                        "%s: unexpected error in a poll cycle; trying again later", rt.query.describe(), exc_info=True
                    )
                    result = None  # the next cycle comes on schedule
                rt.in_cycle_since = None
                now = self.clock.monotonic()
                rt.heartbeat = now
                if result is None or result.error is None:
                    base, rt.next_due = next_poll(base, rt.interval, jitter, now, self.rng)
                else:
                    retry_at = rt.health.retry_at or self.clock.time()
                    delay = max(0.0, retry_at - self.clock.time())
                    rt.next_due = base = now + delay
                    log.warning(
                        "%s: poll failed (%d in a row): %s; next try in %s",
                        rt.query.describe(),
                        rt.health.failures,
                        result.error.describe(),
                        format_duration(delay),
                        extra={"query": rt.query.key, "code": result.error.code, "request_id": result.error.request_id},
                    )

    async def poll(self, query: Query) -> Snapshot | PollError:
        client = self.clients.get(query.account)
        if client is None:
            return PollError(f"no account named {query.account!r}", category="permanent")
        try:
            async with self.limiter:
                return await client.fetch_snapshot(query)
        except PollError as exc:
            return exc
        except Exception as exc:
            log.error("%s: unexpected error while polling", query.describe(), exc_info=True)
            return PollError(f"internal error while polling ({type(exc).__name__}); see the log", category="transient")

    async def run_cycle(self, query: Query) -> PollResult | None:
        """Poll one query once, detect, commit, queue messages. None if it is not configured."""
        rt = self.runtimes.get(query.key)
        if rt is None:
            return None
        started = time.monotonic()
        outcome = await self.poll(query)
        rt.last_duration = time.monotonic() - started
        if self.metrics is not None:
            self.metrics.observe_poll(query, rt.last_duration)
        async with self._commit_lock:
            if self.runtimes.get(query.key) is not rt:
                return None  # removed by a reload while polling
            now = self.clock.time()
            watches = list(rt.watches)
            result = process_poll(
                watches,
                rt.health,
                rt.snapshot,
                {w.name: self.states.get(w.name) for w in watches},
                outcome,
                now,
                failure_alert_after=self.config.monitor.failure_alert_after,
            )
            retry_at = None
            if result.error is not None:
                error = result.error
                retry_at = now + poll_backoff(
                    result.health.failures, error.category, rt.interval, error.retry_after, self.rng
                )
            result.health = replace(result.health, retry_at=retry_at)
            self.add_clock_events(query, watches, result, now)
            outgoing = self.messages_for(watches, result, now)
            assert self.store is not None
            quiet = (
                result.error is None
                and not result.snapshot_changed
                and not result.states
                and not outgoing
                and not result.all_events
                and rt.health.failures == 0
                and not rt.health.alerted
            )
            if quiet:
                # Nothing happened but the poll itself: its time is kept in memory and written
                # with the next change or the periodic flush, so a quiet poll costs no write.
                self._dirty_health[query.key] = result.health
            else:
                try:
                    await self.db(self.store.commit_poll, query.key, result, outgoing, now)
                except StateError as exc:
                    # Nothing was stored, so the next poll finds the same change again: no loss.
                    log.error("%s; the change will be detected again on the next poll", exc)
                    self.sd.status(f"ERROR: {exc}")
                    rt.polls_failed += 1
                    self._state_failed(exc)
                    return result
                self._dirty_health.pop(query.key, None)
                self._state_recovered()
            rt.health = result.health
            if result.snapshot is not None:
                rt.snapshot = result.snapshot
            self.states.update(result.states)
        if result.error is None:
            rt.polls_ok += 1
        else:
            rt.polls_failed += 1
        self.cycles += 1
        for event in result.all_events:
            log.info(
                "%s: %s%s [%s]",
                event.watch,
                event.kind,
                f" {event.spec_key}" if event.spec_key else "",
                event.id,
                extra={"watch": event.watch, "event_id": event.id, "kind": event.kind},
            )
        if outgoing:
            self._deliver_wake.set()
        if self.sd.enabled and time.monotonic() - self._status_sent >= STATUS_EVERY:
            self._status_sent = time.monotonic()
            self.sd.status(self._status_line())
        self._maybe_heartbeat()
        return result

    async def remember_clock_alerts(self) -> None:
        """Watches told about clock skew in the last day are not told again after a restart."""
        assert self.store is not None
        told = await self.db(self.store.watches_with_event, CLOCK_SKEW, self.clock.time() - 86400)
        for w in self.config.watches:
            if w.name in told:
                self._skew_alerted.setdefault(w.account, set()).add(w.name)

    def add_clock_events(self, query: Query, watches: list[Watch], result: PollResult, now: float) -> None:
        """Tell each watch once when this host's clock is more than 5 minutes off the API's."""
        client = self.clients.get(query.account)
        if client is None:
            return
        alerted = self._skew_alerted.setdefault(query.account, set())
        if abs(client.skew) < SKEW_ALERT:
            alerted.clear()
            return
        for w in watches:
            if w.name not in alerted:
                alerted.add(w.name)
                event = new_event(w.name, CLOCK_SKEW, now, skew=round(client.skew))
                result.events.setdefault(w.name, []).insert(0, event)

    def messages_for(self, watches: list[Watch], result: PollResult, now: float) -> list[Outgoing]:
        out = []
        for w in watches:
            events = result.events.get(w.name) or []
            if not events:
                continue
            message = render_message(w.name, events, region=w.region, job_type=w.job_type, tz=self.tz)
            targets = self.notifier.targets(w.notify)
            held: dict[str, float] = {}
            if not message.urgent:
                for name in w.notify:
                    n = self.config.notifiers.get(name)
                    until = quiet_until(n.quiet_hours, now, self.tz) if n else None
                    if until is not None:
                        held[name] = until
            out.append(Outgoing(w.name, message, targets, held))
        return out

    # -- delivery -----------------------------------------------------------------------------
    async def _deliver_loop(self) -> None:
        async with anyio.create_task_group() as tg:
            limiter = anyio.CapacityLimiter(DELIVERY_CONCURRENCY)
            while True:
                self._deliver_wake = anyio.Event()
                await self.deliver_due(tg, limiter)
                assert self.store is not None
                next_at = await self.db(self.store.next_due)
                wait = 60.0
                if next_at is not None:
                    wait = min(wait, max(0.05, next_at - self.clock.time()))
                with anyio.move_on_after(wait / self.clock.scale):
                    await self._deliver_wake.wait()

    async def deliver_due(self, tg: anyio.abc.TaskGroup, limiter: anyio.CapacityLimiter) -> None:
        assert self.store is not None
        if self._no_new_sends:
            return
        now = self.clock.time()
        await self._release_held(now)
        due = await self.db(self.store.due_deliveries, now, 200)
        for d in due:
            lane = _delivery_lane(d)
            if lane in self._in_flight or self._lane_hold.get(lane, 0.0) > now:
                continue
            if d.id in self._unrecorded:
                # Delivered before, but the outbox could not be told: record it, never resend.
                try:
                    await self.db(self.store.mark_sent, d.id, now)
                    self._unrecorded.discard(d.id)
                except StateError:
                    self._lane_hold[lane] = now + DELIVERY_BOOKKEEPING_RETRY
                continue
            self._in_flight.add(lane)
            tg.start_soon(self._deliver_one, d, limiter)

    async def _release_held(self, now: float) -> None:
        assert self.store is not None
        for target, items in await self.db(self.store.held_due, now):
            message = render_digest(target.notifier, [(title, body) for _, _, title, body in items])
            digest = Outgoing(f"digest:{target.notifier}", message, [target])
            await self.db(self.store.release_held, [i for i, _, _, _ in items], digest, now)
            log.info("quiet hours of %s ended: %d held messages go out as one digest", target.notifier, len(items))

    async def _deliver_one(self, d: Delivery, limiter: anyio.CapacityLimiter) -> None:
        assert self.store is not None
        store = self.store
        url_label = self.notifier.label(d.url_key) if self.notifier.knows(d.url_key) else d.url_label
        label = f"{d.notifier} ({url_label})"
        try:
            if not self.notifier.knows(d.url_key):
                await self.db(store.mark_dropped, d.id, "notifier URL no longer configured", self.clock.time())
                self.dropped += 1
                self.delivery_stats[(d.notifier, "dropped")] += 1
                log.error(
                    "dropped message %d for %s: %s is no longer configured",
                    d.message_id,
                    d.watch,
                    label,
                    extra={"watch": d.watch, "notifier": d.notifier},
                )
                return
            try:
                async with limiter:
                    await self.notifier.send(d.url_key, d.title, d.body)
            except DeliveryError as exc:
                await self._delivery_failed(d, exc, label)
                return
            self.delivered += 1
            try:
                with anyio.CancelScope(shield=True):
                    await self.db(store.mark_sent, d.id, self.clock.time())
            except StateError:
                self._unrecorded.add(d.id)
                self._lane_hold[_delivery_lane(d)] = self.clock.time() + DELIVERY_BOOKKEEPING_RETRY
                raise
            self.delivery_stats[(d.notifier, "sent")] += 1
            log.info(
                'delivered "%s" to %s',
                d.title,
                label,
                extra={"watch": d.watch, "notifier": d.notifier, "url": label},
            )
        except Exception as exc:
            if isinstance(exc, StateError):
                log.error("delivery bookkeeping failed: %s", exc)
            else:
                log.error("unexpected error delivering to %s", d.notifier, exc_info=True)
            lane = _delivery_lane(d)
            self._lane_hold[lane] = max(self._lane_hold.get(lane, 0.0), self.clock.time() + DELIVERY_BOOKKEEPING_RETRY)
        finally:
            self._in_flight.discard(_delivery_lane(d))
            self._deliver_wake.set()

    async def _delivery_failed(self, d: Delivery, exc: DeliveryError, label: str) -> None:
        assert self.store is not None
        now = self.clock.time()
        self.delivery_failures += 1
        self.delivery_stats[(d.notifier, "failed")] += 1
        delay = delivery_retry_delay(d.attempts + 1, self.rng)
        if exc.permanent or now + delay - d.created_at > DELIVERY_GIVE_UP:
            why = "it cannot succeed" if exc.permanent else f"undelivered for {format_duration(now - d.created_at)}"
            with anyio.CancelScope(shield=True):
                await self.db(self.store.mark_dropped, d.id, exc.reason, now)
            self.dropped += 1
            self.delivery_stats[(d.notifier, "dropped")] += 1
            log.error(
                'dropped "%s" for %s after %d attempts (%s): %s',
                d.title,
                label,
                d.attempts + 1,
                why,
                exc.reason,
                extra={"watch": d.watch, "notifier": d.notifier, "url": label},
            )
            return
        # Hold the lane in memory too: if the outbox cannot store the retry time, it must not
        # look due again at once.
        self._lane_hold[_delivery_lane(d)] = now + delay
        with anyio.CancelScope(shield=True):
            await self.db(self.store.mark_failed, d.id, exc.reason, now + delay, now)
        log.warning(
            "delivery to %s failed (attempt %d): %s; retry in %s",
            label,
            d.attempts + 1,
            exc.reason,
            format_duration(delay),
            extra={"watch": d.watch, "notifier": d.notifier, "url": label},
        )

    async def _drain(self) -> None:
        """On stop: send what is due now, until nothing is due or the grace period ends.

        Near its end no new send starts, so the ones under way can finish: a send cut off
        half-way may have arrived, and would be sent again after a restart.
        """
        assert self.store is not None
        last_call = time.monotonic() + STOP_GRACE - LAST_SEND_MARGIN
        while True:
            if time.monotonic() >= last_call:
                self._no_new_sends = True
                if not self._in_flight:
                    return
                await anyio.sleep(0.05)
                continue
            now = self.clock.time()
            due = [
                d
                for d in await self.db(self.store.due_deliveries, now, 200)
                if self._lane_hold.get(_delivery_lane(d), 0.0) <= now and d.id not in self._unrecorded
            ]
            if not due and not self._in_flight:
                return
            self._deliver_wake.set()
            await anyio.sleep(0.05)

    # -- housekeeping -------------------------------------------------------------------------
    async def _maintenance_loop(self) -> None:
        assert self.store is not None
        last_prune = -PRUNE_EVERY
        while True:
            await self.flush_health()
            if self.clock.monotonic() - last_prune >= PRUNE_EVERY:
                last_prune = self.clock.monotonic()
                try:
                    removed = await self.db(self.store.prune, self.clock.time() - self.config.monitor.retention)
                    if removed:
                        log.info("pruned %d events older than the retention period", removed)
                except StateError as exc:
                    log.error("pruning history failed: %s", exc)
            await self.clock.sleep(HEALTH_FLUSH_EVERY)

    async def flush_health(self) -> None:
        """Write the poll times of quiet polls (kept in memory meanwhile)."""
        if not self._dirty_health or self.store is None:
            return
        dirty, self._dirty_health = self._dirty_health, {}
        try:
            with anyio.CancelScope(shield=True):
                await self.db(self.store.save_health, dirty)
        except StateError as exc:
            log.error("%s", exc)
            for key, health in dirty.items():
                self._dirty_health.setdefault(key, health)

    def _state_failed(self, exc: StateError) -> None:
        """Tell the team, once and directly, when changes can no longer be stored."""
        self._state_failures += 1
        self.state_error = str(exc)
        if self._state_failures < STATE_ALERT_AFTER or self._state_alerted:
            return
        self._state_alerted = True
        self._notice_all(
            "modelarts-monitor cannot store its state",
            f"**{exc}**. Capacity changes are still detected but cannot be stored or sent reliably; "
            "they will be reported once the state database can be written again.",
        )

    def _state_recovered(self) -> None:
        self._state_failures = 0
        self.state_error = None
        if self._state_alerted:
            self._state_alerted = False
            self._notice_all(
                "modelarts-monitor can store its state again",
                "The state database is writable again; monitoring goes on as normal.",
            )

    def _notice_all(self, title: str, body: str) -> None:
        """A best-effort message to every notifier URL, bypassing the outbox (which may be unusable)."""
        if self._tg is None:
            return
        targets = {t.url_key: t for t in self.notifier.targets(list(self.config.notifiers))}

        async def send_one(key: str, label: str) -> None:
            try:
                await self.notifier.send(key, title, body)
            except DeliveryError as exc:
                log.warning("could not send %r to %s: %s", title, label, exc.reason)

        for key, target in targets.items():
            self._tg.start_soon(send_one, key, f"{target.notifier} ({target.url_label})")

    async def _watchdog_loop(self) -> None:
        interval = self.sd.watchdog_interval or 30.0
        while True:
            if self.loops_alive():
                self.sd.watchdog()
            else:
                log.error("a polling loop is stuck; not pinging the systemd watchdog")
            await anyio.sleep(interval / 3)

    def loops_alive(self) -> bool:
        """False when a query loop has been inside one cycle for far too long."""
        now = self.clock.monotonic()
        limit = self.config.monitor.timeout * 4 + 60
        return all(rt.in_cycle_since is None or now - rt.in_cycle_since < limit for rt in self.runtimes.values())

    def _maybe_heartbeat(self) -> None:
        url = self.config.monitor.heartbeat_url
        if url is None or self._tg is None:
            return
        if not all(rt.health.failures == 0 and rt.health.last_success_at for rt in self.runtimes.values()):
            return
        now = self.clock.monotonic()
        if now - self._last_heartbeat < min(rt.interval for rt in self.runtimes.values()) * 0.9:
            return
        self._last_heartbeat = now
        self._tg.start_soon(self._heartbeat, url.reveal())

    async def _heartbeat(self, url: str) -> None:
        import httpx

        try:
            async with httpx.AsyncClient(timeout=10, transport=self._transport) as client:
                response = await client.get(url)
            if response.status_code >= 400:
                log.warning("heartbeat URL answered HTTP %d", response.status_code)
        except Exception as exc:
            log.warning("heartbeat URL failed: %s", type(exc).__name__)

    # -- reporting ----------------------------------------------------------------------------
    def _status_line(self) -> str:
        total = len(self.runtimes)
        failing = sum(1 for rt in self.runtimes.values() if rt.health.failures)
        watched = available = 0
        for w in self.config.watches:
            state = self.states.get(w.name)
            if state is not None:
                watched += sum(1 for s in state.specs.values() if s.present)
                available += sum(1 for s in state.specs.values() if s.present and s.available)
        text = f"{total} queries ({failing} failing), {watched} specs watched, {available} available"
        if self.delivery_failures:
            text += f", {self.delivery_failures} failed deliveries"
        return text
