"""Transient faults: throttling, timeouts, resets, slow and huge answers; never a false event."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings

from monitor.api.client import ModelArtsClient
from monitor.catalog import JobSpecCatalog
from monitor.config import Account, Secret, Watch, load_config
from monitor.daemon import ScaledClock
from monitor.detect import QueryHealth, process_poll
from monitor.errors import PollError
from monitor.model import Query, Snapshot, Spec
from monitor.simulator import Fault

from .conftest import DEMO_AK, DEMO_SK, PROJECT, HttpReceiver, SimHandle, eventually, running, write_config
from .test_catalog import answers

pytestmark = pytest.mark.anyio
QUERY = Query(account="sim", region="cn-north-4", project_id=PROJECT, job_type="train")


async def poll_with(sim: SimHandle, fault: Fault, timeout: float = 1.0) -> PollError:
    sim.sim.inject(fault)
    account = Account(
        name="sim",
        auth="aksk",
        access_key=Secret(DEMO_AK),
        secret_key=Secret(DEMO_SK),
        endpoint=sim.url,
        iam_endpoint=sim.url,
    )
    async with httpx.AsyncClient() as http:
        client = ModelArtsClient(account, http, timeout=timeout)
        with pytest.raises(PollError) as info:
            await client.fetch_snapshot(QUERY)
    return info.value


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        (Fault(delay=5), "within 1s (timeout)"),
        (Fault(trickle=0.3), "within 1s (timeout)"),
        (Fault(reset=True), "broke mid-answer"),
        (Fault(size=6 * 1024 * 1024), "larger than 5 MiB"),
        (
            Fault(
                status=429,
                body={"error_code": "APIGW.0308", "error_msg": "over ratelimit"},
                headers={"Retry-After": "30"},
            ),
            "throttled by the API gateway",
        ),
        (Fault(status=503, body="<html>Service Unavailable</html>"), "HTTP 503"),
        (Fault(status=200, body="not json at all"), "malformed answer: not JSON"),
        (Fault(status=200, body={"is_success": True, "spec_total_count": 9, "specs": []}), "incomplete answer"),
    ],
    ids=["slow", "trickle", "reset", "huge", "throttled", "html-503", "not-json", "partial"],
)
async def test_each_fault_is_a_failed_poll_with_a_reason(sim: SimHandle, fault: Fault, words: str) -> None:
    error = await poll_with(sim, fault)
    assert words in error.reason
    assert error.category == "transient"


async def test_retry_after_is_honoured(sim: SimHandle) -> None:
    error = await poll_with(
        sim, Fault(status=429, body={"error_code": "APIGW.0308", "error_msg": "x"}, headers={"Retry-After": "120"})
    )
    assert error.retry_after == 120


async def test_throttling_backs_off_one_query_without_touching_the_others(
    tmp_path: Path, sim: SimHandle, webhook: HttpReceiver
) -> None:
    config = load_config(
        write_config(
            tmp_path,
            sim.url,
            notifiers=f"""
        [notifiers.hook]
        urls = ["json://127.0.0.1:{webhook.port}/alerts"]
        """,
            watches="""
        [[watch]]
        name = "train"
        region = "cn-north-4"
        project_id = "0123456789abcdef0123456789abcdef"
        job_type = "train"
        [[watch]]
        name = "inference"
        region = "cn-north-4"
        project_id = "0123456789abcdef0123456789abcdef"
        job_type = "inference"
        """,
        )
    )
    scale = 60.0  # a 5 s interval passes in 83 ms
    async with running(config, clock=ScaledClock(scale)) as daemon:
        await eventually(lambda: daemon.cycles >= 4, what="a few polls")
        sim.sim.inject(
            Fault(
                status=429,
                query="job_type=train",
                headers={"Retry-After": "120"},
                body={"error_code": "APIGW.0308", "error_msg": "over ratelimit"},
            )
        )

        def train() -> list[Any]:
            return [r for r in sim.sim.records() if "job_type=train" in r.query]

        await eventually(lambda: any(r.status == 429 for r in train()), what="the 429")
        throttled_at = next(r.at for r in train() if r.status == 429)
        await eventually(
            lambda: train()[-1].status == 200 and train()[-1].at > throttled_at, timeout=10, what="the next train poll"
        )
    after = next(r.at for r in train() if r.at > throttled_at)
    assert (after - throttled_at) * scale >= 120 * 0.99
    inference = [r.at for r in sim.sim.records() if "job_type=inference" in r.query and throttled_at < r.at < after]
    assert len(inference) >= 10  # the other query kept its 5 s schedule meanwhile


async def test_failures_back_off_exponentially(tmp_path: Path, sim: SimHandle, webhook: HttpReceiver) -> None:
    config = load_config(
        write_config(
            tmp_path,
            sim.url,
            monitor="failure_alert_after = 50",
            notifiers=f"""
        [notifiers.hook]
        urls = ["json://127.0.0.1:{webhook.port}/alerts"]
        """,
            watches="""
        [[watch]]
        name = "train"
        region = "cn-north-4"
        project_id = "0123456789abcdef0123456789abcdef"
        job_type = "train"
        """,
        )
    )
    scale = 120.0
    async with running(config, clock=ScaledClock(scale)) as daemon:
        await eventually(lambda: daemon.cycles >= 1, what="the first poll")
        sim.sim.inject(Fault(status=500, body={"error_code": "ModelArts.0010", "error_message": "busy"}), count=-1)
        await eventually(
            lambda: sum(r.status == 500 for r in sim.sim.records()) >= 5, timeout=15, what="five failed polls"
        )
    times = [r.at for r in sim.sim.records() if r.status == 500][:5]
    gaps = [(b - a) * scale for a, b in zip(times, times[1:], strict=False)]
    # 5 s, 10 s, 20 s, 40 s (each +-10 %)
    for gap, expected in zip(gaps, [5, 10, 20, 40], strict=False):
        assert expected * 0.85 <= gap <= expected * 1.2, gaps


# -- never a false event ----------------------------------------------------------------------------
BASE = Snapshot(0.0, (Spec("a", "a", True, 4, 1, "v100"), Spec("b", "b", False, 2, 1, "v100")))
WATCH = Watch(name="w", account="a", region="r", min_gpu_num=0)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answers)
async def test_a_failed_or_partial_answer_never_produces_spec_events(data: dict[str, Any]) -> None:
    first = process_poll([WATCH], QueryHealth(), None, {"w": None}, BASE, 1.0, failure_alert_after=1)
    try:
        outcome: Snapshot | PollError = JobSpecCatalog.parse(json.dumps(data).encode(), 2.0)
    except PollError as exc:
        outcome = exc
    result = process_poll(
        [WATCH], first.health, first.snapshot, dict(first.states), outcome, 2.0, failure_alert_after=1
    )
    spec_events = [e for e in result.all_events if e.spec_key]
    if isinstance(outcome, PollError) or result.error is not None:
        assert spec_events == [] and result.snapshot is None
    else:
        # A complete answer: every event is about a spec that really changed.
        before = {s.key: s for s in BASE.specs}
        after = {s.key: s for s in outcome.specs}
        for e in spec_events:
            assert before.get(e.spec_key) != after.get(e.spec_key), e


async def test_a_connection_that_is_never_accepted_times_out() -> None:
    """A listener whose backlog is full: the SYN is never answered, the connect times out."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    try:
        for _ in range(8):  # fill the accept queue; later connects hang in SYN-SENT
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        account = Account(
            name="x",
            auth="aksk",
            access_key=Secret("a1a1"),
            secret_key=Secret("b1b1"),
            endpoint=f"http://127.0.0.1:{port}",
            iam_endpoint=f"http://127.0.0.1:{port}",
        )
        async with httpx.AsyncClient(timeout=httpx.Timeout(1.0)) as http:
            client = ModelArtsClient(account, http, timeout=1.0)
            with pytest.raises(PollError) as info:
                await client.fetch_snapshot(QUERY)
    finally:
        for s in fillers:
            s.close()
        server.close()
    assert "within" in info.value.reason and "127.0.0.1" in info.value.reason
    assert info.value.category == "transient"
