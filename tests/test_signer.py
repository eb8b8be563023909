"""The AK/SK signer reproduces the official SDK's signatures byte for byte."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from monitor.api import signer

VECTORS = json.loads((Path(__file__).parent / "data" / "signing_vectors.json").read_text())["vectors"]


def _sign(vector: dict[str, Any]) -> signer.SignedRequest:
    given = vector["input"]
    headers = dict(given["headers_before_signing"])
    if given["project_id_header"]:
        headers["X-Project-Id"] = given["project_id_header"]
    if given["security_token"]:
        headers["X-Security-Token"] = given["security_token"]
    return signer.sign(
        method=given["method"],
        url=f"https://{given['host']}{given['path']}",
        params=[tuple(p) for p in given["query_params"]],
        headers=headers,
        body=given["body_utf8"].encode("utf-8"),
        access_key=given["ak"],
        secret_key=given["sk"],
    )


def test_there_are_eleven_vectors() -> None:
    assert len(VECTORS) == 11


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_it_reproduces_the_sdk_signature(vector: dict[str, Any]) -> None:
    signed = _sign(vector)
    assert signed.canonical_request == vector["canonical_request"]
    assert signed.string_to_sign == vector["string_to_sign"]
    assert signed.signature == vector["signature"]
    assert signed.headers == vector["output"]["headers"]
    assert signed.uri == vector["output"]["uri_sent"]
    assert signed.url == vector["output"]["url"]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_the_gateway_side_check_accepts_what_was_signed(vector: dict[str, Any]) -> None:
    """The simulator rebuilds the canonical request from the wire form and agrees."""
    signed = _sign(vector)
    auth = signer.parse_authorization(signed.headers["Authorization"])
    assert auth is not None
    path, _, query = signed.uri.partition("?")
    expected = signer.expected_signature(
        method=vector["input"]["method"],
        raw_path=path,
        raw_query=query,
        headers=signed.headers,
        signed_headers=auth.signed_headers,
        body=vector["input"]["body_utf8"].encode(),
        secret_key=vector["input"]["sk"],
    )
    assert expected == signed.signature


def test_a_wrong_secret_key_gives_a_different_signature() -> None:
    vector = VECTORS[0]
    signed = _sign(vector)
    auth = signer.parse_authorization(signed.headers["Authorization"])
    assert auth is not None
    path, _, query = signed.uri.partition("?")
    other = signer.expected_signature(
        method="GET",
        raw_path=path,
        raw_query=query,
        headers=signed.headers,
        signed_headers=auth.signed_headers,
        body=b"",
        secret_key="not-the-key",
    )
    assert other != signed.signature


def test_it_signs_with_the_time_given_at_send_time() -> None:
    first = signer.sign(
        method="GET",
        url="https://h.example.com/v1/p/job/resource-specs",
        access_key="AK",
        secret_key="SK",
        timestamp=1_700_000_000,
    )
    later = signer.sign(
        method="GET",
        url="https://h.example.com/v1/p/job/resource-specs",
        access_key="AK",
        secret_key="SK",
        timestamp=1_700_000_060,
    )
    assert first.headers["X-Sdk-Date"] == "20231114T221320Z"
    assert later.headers["X-Sdk-Date"] == "20231114T221420Z"
    assert first.signature != later.signature


def test_host_keeps_a_non_default_port_only() -> None:
    assert (
        signer.sign(method="GET", url="http://127.0.0.1:8086/x", access_key="a", secret_key="b").headers["Host"]
        == "127.0.0.1:8086"
    )
    assert (
        signer.sign(method="GET", url="https://h.example.com:443/x", access_key="a", secret_key="b").headers["Host"]
        == "h.example.com"
    )


def test_a_non_json_body_is_sent_unsigned_as_the_sdk_does() -> None:
    signed = signer.sign(
        method="POST",
        url="https://h.example.com/x",
        body=b"a=b",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        access_key="a",
        secret_key="b",
        timestamp=0,
    )
    assert signed.headers["X-Sdk-Content-Sha256"] == "UNSIGNED-PAYLOAD"
    assert signed.canonical_request.endswith("\nUNSIGNED-PAYLOAD")


def test_malformed_authorization_headers_are_rejected() -> None:
    assert signer.parse_authorization("Bearer abc") is None
    assert signer.parse_authorization("SDK-HMAC-SHA256 Access=a") is None
    assert signer.parse_authorization("SDK-HMAC-SHA256 garbage") is None
