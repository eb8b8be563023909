"""Health alerts and delivery policy end to end: degraded/recovered, quiet hours, heartbeat."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from monitor.config import load_config
from monitor.daemon import ScaledClock
from monitor.simulator import Fault

from .conftest import HttpReceiver, SimHandle, eventually, running
from .conftest import hook_config as usual_config

pytestmark = pytest.mark.anyio
V100 = "modelarts.vm.gpu.v100"


A100_WATCH = """
    [[watch]]
    name = "a100"
    region = "cn-north-4"
    job_type = "train"
    gpu_types = ["a100"]
    """


def hook_config(
    tmp_path: Path, sim: SimHandle, webhook: HttpReceiver, *, monitor: str = "", notifier: str = ""
) -> Path:
    """The usual configuration plus an "a100" watch on the same query."""
    return usual_config(tmp_path, sim, webhook, monitor=monitor, extra_notifiers=notifier, extra_watches=A100_WATCH)


async def test_exactly_one_degraded_and_one_recovered_per_watch(
    tmp_path: Path, sim: SimHandle, webhook: HttpReceiver
) -> None:
    config = load_config(hook_config(tmp_path, sim, webhook, monitor="failure_alert_after = 3"))
    query = config.watches[0].query
    async with running(config) as daemon:
        await eventually(lambda: len(webhook.requests) >= 2, what="two baselines")
        sim.sim.inject(
            Fault(status=502, body={"error_code": "APIGW.0202", "error_msg": "Backend unavailable"}), count=-1
        )
        for _ in range(5):
            await daemon.run_cycle(query)
        await eventually(lambda: len(webhook.requests) >= 4, what="two degraded messages")
        sim.sim.clear_faults()
        await daemon.run_cycle(query)
        await daemon.run_cycle(query)
        await eventually(lambda: len(webhook.requests) >= 6, what="two recovered messages")
    titles = [b["title"] for b in webhook.bodies()[2:]]
    assert sorted(titles) == [
        "a100: monitoring degraded",
        "a100: monitoring recovered after 0 s",
        "v100: monitoring degraded",
        "v100: monitoring recovered after 0 s",
    ]
    degraded = next(b for b in webhook.bodies() if b["title"] == "v100: monitoring degraded")
    assert "3 polls in a row failed" in degraded["message"]
    assert "the ModelArts backend is unavailable (APIGW.0202: Backend unavailable)" in degraded["message"]
    assert len(webhook.requests) == 6


async def test_available_goes_out_at_once_in_quiet_hours_and_the_rest_as_a_digest(
    tmp_path: Path, sim: SimHandle, webhook: HttpReceiver
) -> None:
    clock = ScaledClock(60)  # a quiet-hours minute passes in a second
    local = time.localtime(clock.time())
    minute = local.tm_hour * 60 + local.tm_min
    start, end = (minute - 1) % 1440, (minute + 2) % 1440
    window = f"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}"
    config = load_config(hook_config(tmp_path, sim, webhook, notifier=f'quiet_hours = "{window}"'))
    async with running(config, clock=clock) as daemon:
        await eventually(lambda: daemon.cycles >= 2, what="the baselines, held")
        assert webhook.requests == []
        sim.sim.set_spec(V100, no_resource=False)
        first = (await eventually(lambda: webhook.bodies(), what="the available alert"))[0]
        assert first["title"] == f"v100: {V100} available"
        sim.sim.set_spec("modelarts.vm.gpu.a100", max_num=9)  # not urgent: held
        digest = (await eventually(lambda: webhook.bodies()[1:], timeout=15, what="the digest"))[0]
    assert digest["title"] == "modelarts-monitor: 3 messages held during quiet hours"
    assert "v100: monitoring started" in digest["message"] and "a100: monitoring started" in digest["message"]
    assert "max nodes 2 → **9**" in digest["message"]
    assert len(webhook.requests) == 2


async def test_the_heartbeat_url_is_fetched_only_when_all_queries_polled_well(
    tmp_path: Path, sim: SimHandle, webhook: HttpReceiver
) -> None:
    config = load_config(
        hook_config(tmp_path, sim, webhook, monitor=f'heartbeat_url = "http://127.0.0.1:{webhook.port}/ping"')
    )

    def pings() -> int:
        return sum(r.path == "/ping" for r in webhook.requests)

    async with running(config, clock=ScaledClock(60)) as daemon:  # a 5 s interval passes in 0.08 s
        await eventually(lambda: pings() >= 2, what="heartbeats")
        sim.sim.inject(Fault(status=500, body={"error_code": "ModelArts.0010", "error_message": "busy"}), count=-1)

        def failures() -> int:
            return min(rt.health.failures for rt in daemon.runtimes.values())

        await eventually(lambda: failures() >= 2, what="failing polls")
        count = pings()
        await eventually(lambda: failures() >= 5, what="more failing polls")
        assert pings() == count
        sim.sim.clear_faults()
        await eventually(lambda: pings() > count, what="a heartbeat after recovery")
    assert all(r.method == "GET" for r in webhook.requests if r.path == "/ping")
