"""Delivery under failure: retried per URL from the outbox, in order, once, for 12 hours.

Long stretches run on a compressed clock (ScaledClock): hours of backoff pass
in seconds, while network timeouts stay real.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from monitor.config import load_config
from monitor.daemon import ScaledClock
from monitor.store import StateReader

from .conftest import V100_WATCH, HttpReceiver, SimHandle, eventually, free_port, running, write_config

pytestmark = pytest.mark.anyio
V100 = "modelarts.vm.gpu.v100"


def hook_config(tmp_path: Path, sim: SimHandle, urls: str, interval: str = "60s") -> Any:
    notifiers = f"""
        [notifiers.hook]
        urls = [{urls}]
        """
    return load_config(write_config(tmp_path, sim.url, interval=interval, notifiers=notifiers, watches=V100_WATCH))


def outbox(config: Any) -> dict[str, int]:
    reader = StateReader.open(config.monitor.state_dir)
    if reader is None:
        return {}
    try:
        return reader.outbox_summary().get("v100", {})
    finally:
        reader.close()


def events(config: Any) -> list[Any]:
    reader = StateReader.open(config.monitor.state_dir)
    if reader is None:
        return []
    try:
        return reader.events()
    finally:
        reader.close()


async def test_a_receiver_down_for_hours_gets_every_message_once_in_order(
    tmp_path: Path, sim: SimHandle, webhook: HttpReceiver
) -> None:
    config = hook_config(tmp_path, sim, f'"json://127.0.0.1:{webhook.port}/alerts"')
    clock = ScaledClock(3600)  # an hour a second
    async with running(config, clock=clock):
        await eventually(lambda: len(webhook.requests) == 1, what="the baseline")
        webhook.status = 500
        down_at = clock.time()
        for change in ({"no_resource": False}, {"max_num": 1}, {"no_resource": True}):
            count = len(events(config))
            sim.sim.set_spec(V100, **change)
            await eventually(lambda c=count: len(events(config)) > c, what="the change to be committed")
        await eventually(lambda: clock.time() - down_at > 3 * 3600, what="three hours of outage")
        assert outbox(config).get("pending") == 3
        webhook.status = 200
        await eventually(
            lambda: outbox(config).get("sent") == 4 and not outbox(config).get("pending"),
            timeout=10,
            what="every message delivered",
        )
    titles = [b["title"] for b in webhook.bodies()]
    assert titles == [
        "v100: monitoring started, 1 of 2 watched specs available",
        f"v100: {V100} available",
        f"v100: {V100} max nodes changed",
        f"v100: {V100} sold out",
    ]


async def test_a_message_undelivered_for_12_hours_is_dropped_with_an_error(
    tmp_path: Path, sim: SimHandle, webhook: HttpReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    webhook.status = 500
    config = hook_config(tmp_path, sim, f'"json://127.0.0.1:{webhook.port}/alerts"', interval="1h")
    async with running(config, clock=ScaledClock(4 * 3600)):  # four hours a second
        await eventually(lambda: outbox(config).get("dropped") == 1, timeout=15, what="the drop")
    dropped = [r for r in caplog.records if r.levelno == logging.ERROR and "dropped" in r.getMessage()]
    assert len(dropped) == 1
    assert "undelivered for 12 h" in dropped[0].getMessage() or "undelivered for 11 h" in dropped[0].getMessage()
    assert webhook.requests == []


async def test_a_dead_smtp_server_gets_the_message_once_it_is_back(tmp_path: Path, sim: SimHandle) -> None:
    from aiosmtpd.controller import Controller

    port = free_port()
    url = f'"mailto://127.0.0.1:{port}?mode=insecure&from=m@example.com&to=o@example.com&cto=2"'
    config = hook_config(tmp_path, sim, url)
    received: list[Any] = []

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            received.append(envelope)
            return "250 OK"

    async with running(config, clock=ScaledClock(60)) as daemon:
        await eventually(lambda: daemon.delivery_failures >= 2, what="failed attempts")
        assert outbox(config).get("pending") == 1
        controller = Controller(Handler(), hostname="127.0.0.1", port=port)
        controller.start()
        try:
            await eventually(lambda: outbox(config).get("sent") == 1, timeout=20, what="the retry")
        finally:
            controller.stop()
    assert len(received) == 1


async def test_a_notifier_that_hangs_is_retried(
    tmp_path: Path, sim: SimHandle, webhook: HttpReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    webhook.hang = True
    config = hook_config(tmp_path, sim, f'"json://127.0.0.1:{webhook.port}/alerts"')
    async with running(config, clock=ScaledClock(60)) as daemon:
        await eventually(lambda: daemon.delivery_failures >= 1, timeout=20, what="the timed-out attempt")
        webhook.hang = False
        await eventually(lambda: outbox(config).get("sent") == 1, timeout=20, what="the retry")
    assert len(webhook.requests) == 1
    failures = [r.getMessage() for r in caplog.records if "delivery to hook" in r.getMessage()]
    assert failures and "failed (attempt 1)" in failures[0]


async def test_one_failing_url_does_not_hold_up_another_watch_or_url(
    tmp_path: Path, sim: SimHandle, webhook: HttpReceiver
) -> None:
    dead = free_port()
    config = hook_config(tmp_path, sim, f'"json://127.0.0.1:{webhook.port}/alerts", "json://127.0.0.1:{dead}/nobody"')
    async with running(config, clock=ScaledClock(60)) as daemon:
        await eventually(lambda: len(webhook.requests) == 1, what="the baseline at the live URL")
        sim.sim.set_spec(V100, no_resource=False)
        await eventually(lambda: len(webhook.requests) == 2, what="the change at the live URL")
        assert daemon.delivery_failures >= 2
    assert outbox(config) == {"sent": 2, "pending": 2}
