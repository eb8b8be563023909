"""The daemon end to end, in-process, against the simulator and real receivers on loopback.

Email goes to a real SMTP server (aiosmtpd) through apprise's mailto://, Slack
through apprise's real Slack plugin to a local stand-in for Slack's webhook
host, and json:// to a local HTTP server. Assertions are on what arrived.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from monitor.config import load_config
from monitor.store import StateReader

from .conftest import (
    SLACK_URL,
    HttpReceiver,
    SimHandle,
    SmtpSink,
    email_text,
    eventually,
    running,
    write_config,
)

pytestmark = pytest.mark.anyio

V100 = "modelarts.vm.gpu.v100"
A100 = "modelarts.vm.gpu.a100"


def three_notifiers(smtp: SmtpSink, webhook: HttpReceiver) -> str:
    return f"""
        [notifiers.slack]
        urls = ["{SLACK_URL}"]
        [notifiers.mail]
        urls = ["{smtp.url}"]
        [notifiers.hook]
        urls = ["json://127.0.0.1:{webhook.port}/alerts"]
        """


async def test_a_capacity_change_reaches_slack_email_and_a_webhook(
    tmp_path: Path, sim: SimHandle, smtp: SmtpSink, slack: HttpReceiver, webhook: HttpReceiver
) -> None:
    config = load_config(
        write_config(
            tmp_path,
            sim.url,
            notifiers=three_notifiers(smtp, webhook),
            watches="""
        [[watch]]
        name = "北京-v100训练"
        region = "cn-north-4"
        job_type = "train"
        gpu_types = ["v100"]
        """,
        )
    )
    async with running(config) as daemon:
        await eventually(
            lambda: len(webhook.requests) >= 1 and len(slack.requests) >= 1 and len(smtp.messages) >= 1,
            what="the baseline everywhere",
        )
        baseline = webhook.bodies()[0]
        assert "monitoring started" in baseline["title"]
        assert V100 in baseline["message"]  # listed as sold out now
        sim.sim.set_spec(V100, no_resource=False)
        query = config.watches[0].query
        await daemon.run_cycle(query)
        await eventually(
            lambda: len(webhook.requests) >= 2 and len(slack.requests) >= 2 and len(smtp.messages) >= 2,
            what="the alert everywhere",
        )

    hook = webhook.bodies()[1]
    assert hook["title"] == f"北京-v100训练: {V100} available"
    assert "sold out → **available**" in hook["message"]
    assert "region cn-north-4" in hook["message"] and "job type train" in hook["message"]

    slack_payload = slack.bodies()[1]
    attachment = slack_payload["attachments"][0]
    assert attachment["title"] == hook["title"]
    assert "*available*" in attachment["text"]  # markdown converted to Slack's syntax
    assert slack.requests[1].path == "/services/T0000TEST/B0000TEST/slacksecrettoken000000001"

    mail = smtp.messages[1]
    assert mail["Subject"] == hook["title"]  # non-ASCII survives RFC 2047 encoding
    text = email_text(mail)
    assert V100 in text and "1 × V100" in text

    # Every message carries the event id that history knows.
    reader = StateReader.open(config.monitor.state_dir)
    assert reader is not None
    event = [e for e in reader.events() if e.kind == "available"][0]
    reader.close()
    assert event.id in hook["message"] and event.id in text and event.id in attachment["text"]


async def test_watches_that_share_a_query_share_one_request(
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
        name = "v100"
        region = "cn-north-4"
        job_type = "train"
        gpu_types = ["v100"]
        [[watch]]
        name = "a100"
        region = "cn-north-4"
        job_type = "train"
        gpu_types = ["a100"]
        [[watch]]
        name = "inference"
        region = "cn-north-4"
        job_type = "inference"
        """,
        )
    )
    async with running(config) as daemon:
        await eventually(lambda: daemon.cycles >= 2, what="the first poll of both queries")
        assert sim.spec_requests() == 2
        before = sim.spec_requests()
        train = config.watches[0].query
        await daemon.run_cycle(train)
        assert sim.spec_requests() == before + 1
        await eventually(lambda: len(webhook.requests) >= 3, what="three baselines")
    titles = sorted(b["title"].split(":")[0] for b in webhook.bodies())
    assert titles == ["a100", "inference", "v100"]


async def test_one_message_per_poll_lists_every_change(tmp_path: Path, sim: SimHandle, webhook: HttpReceiver) -> None:
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
        name = "gpus"
        region = "cn-north-4"
        job_type = "train"
        """,
        )
    )
    async with running(config) as daemon:
        await eventually(lambda: len(webhook.requests) >= 1, what="baseline")
        sim.sim.set_spec(V100, no_resource=False, max_num=2)
        sim.sim.set_spec(A100, no_resource=False)
        sim.sim.set_spec("modelarts.vm.gpu.h100", gpu_type="h100", no_resource=False)
        await daemon.run_cycle(config.watches[0].query)
        await eventually(lambda: len(webhook.requests) >= 2, what="the change message")
        assert len(webhook.requests) == 2
    message = webhook.bodies()[1]
    assert message["title"] == "gpus: 2 available, 1 new, 1 max nodes changed"
    lines = [line for line in message["message"].splitlines() if line.startswith("- ")]
    assert len(lines) == 4


async def test_a_restart_sends_no_duplicates_and_reports_what_changed_while_down(
    tmp_path: Path, sim: SimHandle, webhook: HttpReceiver
) -> None:
    path = write_config(
        tmp_path,
        sim.url,
        notifiers=f"""
        [notifiers.hook]
        urls = ["json://127.0.0.1:{webhook.port}/alerts"]
        """,
        watches="""
        [[watch]]
        name = "v100"
        region = "cn-north-4"
        job_type = "train"
        gpu_types = ["v100"]
        """,
    )
    config = load_config(path)
    async with running(config) as daemon:
        await eventually(lambda: len(webhook.requests) >= 1, what="baseline")
    async with running(load_config(path)) as daemon:
        await eventually(lambda: daemon.cycles >= 1, what="a poll after restart")
    assert len(webhook.requests) == 1  # no second baseline, nothing re-sent
    sim.sim.set_spec(V100, no_resource=False)  # changes while the daemon is down
    async with running(load_config(path)) as daemon:
        await eventually(lambda: len(webhook.requests) >= 2, what="the change made while down")
        assert daemon.cycles >= 1
    assert webhook.bodies()[1]["title"] == f"v100: {V100} available"


async def test_a_failed_poll_sends_no_spec_events(tmp_path: Path, sim: SimHandle, webhook: HttpReceiver) -> None:
    from monitor.simulator import Fault

    config = load_config(
        write_config(
            tmp_path,
            sim.url,
            monitor="failure_alert_after = 5",
            notifiers=f"""
        [notifiers.hook]
        urls = ["json://127.0.0.1:{webhook.port}/alerts"]
        """,
            watches="""
        [[watch]]
        name = "v100"
        region = "cn-north-4"
        job_type = "train"
        gpu_types = ["v100"]
        """,
        )
    )
    async with running(config) as daemon:
        await eventually(lambda: len(webhook.requests) >= 1, what="baseline")
        query = config.watches[0].query
        for fault in (
            Fault(status=200, body={"is_success": False, "error_code": "ModelArts.0010", "error_message": "internal"}),
            Fault(status=502, body="<html>Bad Gateway</html>"),
            Fault(status=200, body={"is_success": True, "spec_total_count": 0, "specs": []}),
        ):
            sim.sim.inject(fault)
            result = await daemon.run_cycle(query)
            assert result is not None and result.error is not None
            assert [e for e in result.all_events if e.spec_key] == []
        sim.sim.set_spec(V100, no_resource=False)
        await daemon.run_cycle(query)
        await eventually(lambda: len(webhook.requests) >= 2, what="the real change")
    assert len(webhook.requests) == 2
    assert "available" in webhook.bodies()[1]["title"]


async def test_each_url_is_delivered_on_its_own(
    tmp_path: Path, sim: SimHandle, webhook: HttpReceiver, slack: HttpReceiver
) -> None:
    """A failing URL is retried alone; the one that worked is never sent twice."""
    slack.status = 500
    config = load_config(
        write_config(
            tmp_path,
            sim.url,
            notifiers=f"""
        [notifiers.team]
        urls = ["json://127.0.0.1:{webhook.port}/alerts", "{SLACK_URL}"]
        """,
            watches="""
        [[watch]]
        name = "v100"
        region = "cn-north-4"
        job_type = "train"
        gpu_types = ["v100"]
        """,
        )
    )
    async with running(config) as daemon:
        await eventually(lambda: len(webhook.requests) >= 1, what="baseline to the webhook")
        await eventually(lambda: daemon.delivery_failures >= 1, what="the Slack failure")
        assert len(slack.requests) == 0

        def slack_pending() -> list[dict[str, Any]]:
            reader = StateReader.open(config.monitor.state_dir)
            assert reader is not None
            try:
                rows = reader.pending()
            finally:
                reader.close()
            return rows if len(rows) == 1 and rows[0]["last_error"] else []

        rows = await eventually(slack_pending, what="only the Slack delivery pending")
        assert "Internal server error" in (rows[0]["last_error"] or "")
        assert rows[0]["url"].startswith("slack://") and "slacksecrettoken" not in rows[0]["url"]
        slack.status = 200
    assert len(webhook.requests) == 1
