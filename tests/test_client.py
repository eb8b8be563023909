"""The API client against the simulator over loopback: auth modes, errors, project lookup."""

from __future__ import annotations

import httpx
import pytest

from monitor.api.client import ModelArtsClient
from monitor.config import Account, Secret
from monitor.errors import PollError
from monitor.model import Query
from monitor.simulator import Fault

from .conftest import DEMO_AK, DEMO_SK, PROJECT, SimHandle

pytestmark = pytest.mark.anyio


def aksk(sim: SimHandle, *, ak: str = DEMO_AK, sk: str = DEMO_SK, token: str | None = None) -> Account:
    return Account(
        name="sim",
        auth="aksk",
        access_key=Secret(ak),
        secret_key=Secret(sk),
        security_token=Secret(token) if token else None,
        endpoint=sim.url,
        iam_endpoint=sim.url,
    )


def password(sim: SimHandle, pw: str = "demo-password") -> Account:
    return Account(
        name="sim",
        auth="password",
        domain="demo",
        username="demo",
        password=Secret(pw),
        endpoint=sim.url,
        iam_endpoint=sim.url,
    )


QUERY = Query(account="sim", region="cn-north-4", project_id=PROJECT, job_type="train")


async def fetch(account: Account, query: Query = QUERY) -> tuple[ModelArtsClient, object]:
    async with httpx.AsyncClient() as http:
        client = ModelArtsClient(account, http, timeout=5)
        try:
            return client, await client.fetch_snapshot(query)
        except PollError as exc:
            return client, exc


async def test_a_signed_request_is_accepted(sim: SimHandle) -> None:
    _, snap = await fetch(aksk(sim))
    codes = {s.spec_code for s in snap.specs}  # type: ignore[attr-defined]
    assert "modelarts.vm.gpu.v100" in codes
    record = sim.sim.records()[-1]
    assert (record.status, record.auth) == (200, "aksk")
    assert "engine_id=0&job_type=train&project_type=0" == record.query


async def test_a_wrong_secret_key_is_a_credentials_failure(sim: SimHandle) -> None:
    _, error = await fetch(aksk(sim, sk="wrong-secret"))
    assert isinstance(error, PollError)
    assert error.category == "credentials" and error.code == "APIGW.0301"
    assert "signature does not match" in error.reason and "check the secret key" in error.reason
    assert "wrong-secret" not in str(error)


async def test_an_unknown_access_key_says_so(sim: SimHandle) -> None:
    _, error = await fetch(aksk(sim, ak="NOSUCHKEY00000000001"))
    assert isinstance(error, PollError) and "access key does not exist" in error.reason


async def test_a_lookup_finds_the_project_id(sim: SimHandle) -> None:
    client, snap = await fetch(aksk(sim), Query(account="sim", region="cn-north-4", project_id=None, job_type="train"))
    assert not isinstance(snap, PollError)
    assert client._projects == {"cn-north-4": PROJECT}


async def test_a_lookup_of_an_unknown_region_is_a_clear_error(sim: SimHandle) -> None:
    _, error = await fetch(aksk(sim), Query(account="sim", region="xx-nowhere-1", project_id=None, job_type="train"))
    assert isinstance(error, PollError) and error.category == "permanent"
    assert "no project named 'xx-nowhere-1'" in error.reason


async def test_password_auth_gets_a_token_and_uses_it(sim: SimHandle) -> None:
    _, snap = await fetch(password(sim), Query(account="sim", region="cn-north-4", project_id=None, job_type="train"))
    assert not isinstance(snap, PollError), snap
    kinds = [(r.method, r.auth) for r in sim.sim.records("")]
    assert kinds == [("POST", "password"), ("GET", "token")]


async def test_a_wrong_password_is_reported(sim: SimHandle) -> None:
    _, error = await fetch(password(sim, "nope"))
    assert isinstance(error, PollError) and "getting an IAM token failed" in error.reason
    assert error.code == "IAM.0001"


async def test_an_error_answer_carries_code_and_request_id(sim: SimHandle) -> None:
    sim.sim.inject(
        Fault(
            status=400, body={"is_success": False, "error_code": "ModelArts.0104", "error_message": "Invalid job_type"}
        )
    )
    _, error = await fetch(aksk(sim))
    assert isinstance(error, PollError)
    assert error.code == "ModelArts.0104" and error.category == "permanent"
    assert error.request_id and error.request_id in error.describe()
    assert "check job_type, engine_id and project_type" in error.reason


async def test_is_success_false_under_200_is_a_failure(sim: SimHandle) -> None:
    sim.sim.inject(
        Fault(status=200, body={"is_success": False, "error_code": "ModelArts.0010", "error_message": "busy"})
    )
    _, error = await fetch(aksk(sim))
    assert isinstance(error, PollError) and error.code == "ModelArts.0010" and error.category == "transient"


async def test_an_html_gateway_page_is_a_failure_with_a_reason(sim: SimHandle) -> None:
    sim.sim.inject(Fault(status=502, body="<html><h1>502 Bad Gateway</h1></html>"))
    _, error = await fetch(aksk(sim))
    assert isinstance(error, PollError)
    assert "HTTP 502" in error.reason and "not JSON" in error.reason


async def test_a_refused_connection_is_a_failure_with_a_reason() -> None:
    account = Account(
        name="x",
        auth="aksk",
        access_key=Secret("a1a1"),
        secret_key=Secret("b1b1"),
        endpoint="http://127.0.0.1:9",
        iam_endpoint="http://127.0.0.1:9",
    )
    _, error = await fetch(account)
    assert isinstance(error, PollError) and "connection refused" in error.reason
