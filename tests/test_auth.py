"""Every auth mode, lockout safety and clock skew, against the simulator's gateway checks."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from monitor.api.client import ModelArtsClient
from monitor.config import Account, Secret, load_config
from monitor.errors import PollError
from monitor.model import Query

from .conftest import DEMO_AK, DEMO_SK, PROJECT, HttpReceiver, SimHandle, eventually, running, write_config

pytestmark = pytest.mark.anyio
QUERY = Query(account="sim", region="cn-north-4", project_id=PROJECT, job_type="train")
LOOKUP = Query(account="sim", region="cn-north-4", project_id=None, job_type="train")


def account(sim: SimHandle, **kw: object) -> Account:
    base: dict[str, object] = {
        "name": "sim",
        "auth": "aksk",
        "access_key": Secret(DEMO_AK),
        "secret_key": Secret(DEMO_SK),
        "endpoint": sim.url,
        "iam_endpoint": sim.url,
    }
    base.update(kw)
    return Account(**base)  # type: ignore[arg-type]


def password_account(sim: SimHandle) -> Account:
    return account(
        sim,
        auth="password",
        access_key=None,
        secret_key=None,
        domain="demo",
        username="demo",
        password=Secret("demo-password"),
    )


def token_requests(sim: SimHandle) -> int:
    return sum(1 for r in sim.sim.records("/v3/auth/tokens"))


async def test_a_password_token_is_cached(sim: SimHandle) -> None:
    async with httpx.AsyncClient() as http:
        client = ModelArtsClient(password_account(sim), http)
        for _ in range(3):
            await client.fetch_snapshot(LOOKUP)
    assert token_requests(sim) == 1
    assert [r.auth for r in sim.sim.records()] == ["token"] * 3


async def test_a_token_is_renewed_an_hour_before_it_expires(sim: SimHandle) -> None:
    sim.sim.scenario.token_ttl = 3000  # less than an hour left from the start
    async with httpx.AsyncClient() as http:
        client = ModelArtsClient(password_account(sim), http)
        await client.fetch_snapshot(QUERY)
        await client.fetch_snapshot(QUERY)
    assert token_requests(sim) == 2


async def test_a_token_the_gateway_says_must_be_updated_is_renewed_once(sim: SimHandle) -> None:
    async with httpx.AsyncClient() as http:
        client = ModelArtsClient(password_account(sim), http)
        await client.fetch_snapshot(QUERY)
        sim.sim.expire_tokens()  # the next request answers 401 APIGW.0307
        snap = await client.fetch_snapshot(QUERY)
    assert snap.specs
    assert token_requests(sim) == 2
    statuses = [(r.status, r.code) for r in sim.sim.records()]
    assert statuses == [(200, None), (401, "APIGW.0307"), (200, None)]


async def test_a_static_token_is_reread_when_rejected(sim: SimHandle, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(sim.sim.issue_token(PROJECT) + "\n")
    acc = account(
        sim,
        auth="token",
        access_key=None,
        secret_key=None,
        token=Secret(token_file.read_text().strip(), f"file:{token_file}"),
    )
    async with httpx.AsyncClient() as http:
        client = ModelArtsClient(acc, http)
        assert (await client.fetch_snapshot(QUERY)).specs
        sim.sim.expire_tokens()
        with pytest.raises(PollError) as info:
            await client.fetch_snapshot(QUERY)  # same file, same token: nothing to renew with
        assert info.value.code == "APIGW.0307"
        token_file.write_text(sim.sim.issue_token(PROJECT))  # another program renews the file
        client.blocked_until = 0  # (the daemon would wait out its pause first)
        assert (await client.fetch_snapshot(QUERY)).specs


async def test_temporary_credentials_sign_the_security_token(sim: SimHandle) -> None:
    sim.sim.scenario.accounts[0].security_token = "temporary-security-token-0001"
    async with httpx.AsyncClient() as http:
        ok = ModelArtsClient(account(sim, security_token=Secret("temporary-security-token-0001")), http)
        assert (await ok.fetch_snapshot(QUERY)).specs
        missing = ModelArtsClient(account(sim), http)
        with pytest.raises(PollError) as info:
            await missing.fetch_snapshot(QUERY)
    assert info.value.category == "credentials"


async def test_several_projects_with_the_name_are_a_clear_error(sim: SimHandle) -> None:
    sim.sim.add_project("99999999999999999999999999999999", "cn-north-4")
    async with httpx.AsyncClient() as http:
        client = ModelArtsClient(account(sim), http)
        with pytest.raises(PollError) as info:
            await client.fetch_snapshot(LOOKUP)
    assert "several projects named 'cn-north-4': set project_id" in info.value.reason


async def test_the_project_lookup_is_cached(sim: SimHandle) -> None:
    async with httpx.AsyncClient() as http:
        client = ModelArtsClient(account(sim), http)
        for _ in range(3):
            await client.fetch_snapshot(LOOKUP)
    assert len(sim.sim.records("/v3/projects")) == 1


# -- lockout safety -------------------------------------------------------------------------------
def many_watches(n: int) -> str:
    return "".join(
        f"""
        [[watch]]
        name = "w{i}"
        region = "cn-north-4"
        job_type = "train"
        engine_id = {i}
        """
        for i in range(n)
    )


def wrong_key_config(tmp_path: Path, sim: SimHandle, webhook: HttpReceiver, watches: int) -> Path:
    """``watches`` watches on as many queries, and a secret key the gateway rejects."""
    path = write_config(
        tmp_path,
        sim.url,
        notifiers=f"""
        [notifiers.hook]
        urls = ["json://127.0.0.1:{webhook.port}/alerts"]
        """,
        watches=many_watches(watches),
    )
    path.write_text(path.read_text().replace(DEMO_SK, "wrong-secret-key"))
    return path


async def test_a_rejected_key_is_tried_at_most_twice_in_five_minutes(
    tmp_path: Path, sim: SimHandle, webhook: HttpReceiver
) -> None:
    """Ten watches on ten queries, a wrong secret key: the gateway never gets to lock the key."""
    from monitor.daemon import ScaledClock

    path = wrong_key_config(tmp_path, sim, webhook, 10)
    config = load_config(path)
    # Ten scaled minutes pass in ten real seconds, so the schedules retry often; the key's
    # pause runs on real time and holds.
    async with running(config, clock=ScaledClock(60)) as daemon:
        await eventually(lambda: len(webhook.requests) >= 10, what="a degraded message per watch")
        await eventually(lambda: daemon.cycles >= 20, what="every query retried at least once")
    failed = [r for r in sim.sim.records("") if r.status == 401]
    assert 1 <= len(failed) <= 2, [(r.at, r.query) for r in failed]
    titles = {b["title"] for b in webhook.bodies()}
    assert titles == {f"w{i}: monitoring degraded" for i in range(10)}
    body = webhook.bodies()[0]["message"]
    assert "authentication rejected" in body and "check the secret key" in body
    assert "wrong-secret-key" not in body


async def test_a_rejected_key_backs_off_at_least_five_minutes(
    tmp_path: Path, sim: SimHandle, webhook: HttpReceiver
) -> None:
    path = wrong_key_config(tmp_path, sim, webhook, 1)
    config = load_config(path)
    async with running(config) as daemon:
        await eventually(lambda: daemon.cycles >= 1, what="the first poll")
        rt = next(iter(daemon.runtimes.values()))
        await eventually(
            lambda: (
                rt.health.failures == 1 and rt.next_due is not None and rt.next_due - daemon.clock.monotonic() > 290
            ),
            what="the backoff",
        )


# -- clock skew -------------------------------------------------------------------------------------
async def test_clock_skew_is_measured_corrected_and_reported_once(
    tmp_path: Path, sim: SimHandle, webhook: HttpReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    sim.sim.clock_offset = 20 * 60.0  # the API's clock is 20 minutes ahead of ours
    config = load_config(
        write_config(
            tmp_path,
            sim.url,
            notifiers=f"""
        [notifiers.hook]
        urls = ["json://127.0.0.1:{webhook.port}/alerts"]
        """,
            watches=many_watches(1),
        )
    )
    query = config.watches[0].query
    async with running(config) as daemon:
        await eventually(lambda: daemon.cycles >= 1, what="the first poll")
        for _ in range(3):
            result = await daemon.run_cycle(query)
            assert result is not None and result.error is None
        await eventually(lambda: len(webhook.requests) >= 1, what="the messages")
        skew = daemon.clients["sim"].skew
    assert 1190 < skew < 1210
    statuses = [r.status for r in sim.sim.records("")]
    assert statuses[:2] == [401, 200] and set(statuses[2:]) == {200}  # one expired signature, then right
    bodies = webhook.bodies()
    assert "this host's clock is 20 min behind the API's" in bodies[0]["title"]
    assert sum("clock" in b["title"] for b in bodies) == 1
    warnings = [r for r in caplog.records if "clock here differs" in r.getMessage()]
    assert len(warnings) == 1


async def test_a_restart_keeps_the_backoff_of_a_rejected_key(
    tmp_path: Path, sim: SimHandle, webhook: HttpReceiver
) -> None:
    """Restarting (by hand or by systemd) must not send the rejected key again at once."""
    path = wrong_key_config(tmp_path, sim, webhook, 2)
    async with running(load_config(path)) as daemon:
        await eventually(lambda: daemon.cycles >= 2, what="the first polls")
    attempts = len(sim.sim.records(""))
    for _ in range(3):
        async with running(load_config(path)) as daemon:
            rt = next(iter(daemon.runtimes.values()))
            await eventually(lambda rt=rt: rt.next_due is not None, what="the schedule")
            assert rt.next_due - daemon.clock.monotonic() > 250  # type: ignore[operator]
    assert len(sim.sim.records("")) == attempts
