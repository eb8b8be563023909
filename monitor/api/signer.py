"""AK/SK request signing (``SDK-HMAC-SHA256``), byte for byte as the official SDK.

Pure functions, no I/O: the client signs each attempt at send time, and the
simulator rebuilds the canonical request from what arrived to verify it, with
the same code. See ../shared/api/REFERENCE.md section 1; every vector in
tests/data/signing_vectors.json is reproduced exactly.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, unquote, urlsplit

ALGORITHM = "SDK-HMAC-SHA256"
DATE_HEADER = "X-Sdk-Date"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"

QueryParams = Sequence[tuple[str, Any]]


@dataclass(frozen=True)
class SignedRequest:
    url: str  # what to send: scheme://host/path?canonical-query
    uri: str  # path?canonical-query
    headers: dict[str, str]  # every header to send, Authorization included
    canonical_request: str
    string_to_sign: str
    signature: str


def format_sdk_date(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime(DATE_FORMAT)


def parse_sdk_date(text: str) -> float:
    return datetime.strptime(text, DATE_FORMAT).replace(tzinfo=timezone.utc).timestamp()


def _encode(text: str) -> str:
    # RFC 3986: only A-Za-z0-9-_.~ stay literal; space is %20, never '+'.
    return quote(text, safe="~")


def _text(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


def canonical_uri(path: str) -> str:
    """Decode the path, re-encode each segment, and always end with '/'."""
    encoded = "/".join(_encode(segment) for segment in unquote(path).split("/"))
    return encoded if encoded.endswith("/") else encoded + "/"


def canonical_query(params: QueryParams) -> str:
    """Sort decoded (key, value) pairs by key then value, then encode; lists repeat the key."""
    pairs: list[tuple[str, str]] = []
    for key, value in params:
        if isinstance(value, (list, tuple)):
            pairs.extend((key, _text(v)) for v in value)
        else:
            pairs.append((key, _text(value)))
    pairs.sort()
    return "&".join(f"{_encode(k)}={_encode(v)}" for k, v in pairs)


def parse_query(raw: str) -> list[tuple[str, str]]:
    """Decoded (key, value) pairs of a query string as it arrived on the wire."""
    pairs = []
    for part in raw.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        pairs.append((unquote(key), unquote(value)))
    return pairs


def signable_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Lower-cased names and trimmed values of every header the signature covers."""
    return {k.lower(): v.strip() for k, v in headers.items() if "_" not in k}


def canonical_request(
    method: str,
    path: str,
    params: QueryParams,
    headers: Mapping[str, str],
    signed: Iterable[str],
    payload_hash: str,
) -> str:
    """The six-part canonical request; ``headers`` must be keyed by lower-case name."""
    names = sorted(signed)
    header_block = "".join(f"{n}:{headers.get(n, '')}\n" for n in names)
    return "\n".join(
        [
            method.upper(),
            canonical_uri(path),
            canonical_query(params),
            header_block,
            ";".join(names),
            payload_hash,
        ]
    )


def string_to_sign(sdk_date: str, canonical: str) -> str:
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return f"{ALGORITHM}\n{sdk_date}\n{digest}"


def signature(secret_key: str, to_sign: str) -> str:
    # No key derivation, unlike AWS SigV4: the raw SK is the HMAC key.
    return hmac.new(secret_key.encode("utf-8"), to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def payload_hash(body: bytes, headers: Mapping[str, str]) -> str:
    if not body:
        return EMPTY_SHA256
    content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
    if "json" in content_type.lower() or "bson" in content_type.lower():
        return hashlib.sha256(body).hexdigest()
    return UNSIGNED_PAYLOAD


def sign(
    *,
    method: str,
    url: str,
    params: QueryParams = (),
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
    access_key: str,
    secret_key: str,
    timestamp: float | None = None,
) -> SignedRequest:
    """Sign one request. ``url`` is scheme://host[:port]/path without a query.

    Every header passed in is signed (except names containing '_'), so pass only
    headers that will reach the wire unchanged: Host, X-Sdk-Date, X-Project-Id,
    X-Security-Token and Content-Type if you send one.
    """
    parts = urlsplit(url)
    out: dict[str, str] = {k: v.strip() for k, v in (headers or {}).items()}
    lower = {k.lower() for k in out}
    if "x-sdk-date" not in lower:
        stamp = timestamp if timestamp is not None else datetime.now(timezone.utc).timestamp()
        out[DATE_HEADER] = format_sdk_date(stamp)
    if "host" not in lower:
        # urlsplit keeps ":port" in netloc only when it was written, so a default port is dropped
        # exactly when the caller left it out; strip explicit default ports too.
        netloc = parts.netloc
        if (parts.scheme, parts.port) in (("https", 443), ("http", 80)):
            netloc = parts.hostname or netloc
        out["Host"] = netloc
    payload = payload_hash(body, out)
    if payload == UNSIGNED_PAYLOAD:
        out["X-Sdk-Content-Sha256"] = UNSIGNED_PAYLOAD
    sdk_date = next(v for k, v in out.items() if k.lower() == "x-sdk-date")
    canon_headers = signable_headers(out)
    canonical = canonical_request(method, parts.path or "/", params, canon_headers, canon_headers, payload)
    to_sign = string_to_sign(sdk_date, canonical)
    sig = signature(secret_key, to_sign)
    signed_names = ";".join(sorted(canon_headers))
    out["Authorization"] = f"{ALGORITHM} Access={access_key}, SignedHeaders={signed_names}, Signature={sig}"
    query = canonical_query(params)
    uri = f"{parts.path}?{query}" if query else parts.path
    return SignedRequest(
        url=f"{parts.scheme}://{parts.netloc}{uri}",
        uri=uri,
        headers=out,
        canonical_request=canonical,
        string_to_sign=to_sign,
        signature=sig,
    )


@dataclass(frozen=True)
class Authorization:
    access_key: str
    signed_headers: tuple[str, ...]
    signature: str


def parse_authorization(value: str) -> Authorization | None:
    """Read ``SDK-HMAC-SHA256 Access=..., SignedHeaders=..., Signature=...``; None if malformed."""
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        return None
    fields: dict[str, str] = {}
    for item in rest.split(","):
        key, sep, val = item.strip().partition("=")
        if not sep:
            return None
        fields[key] = val
    try:
        return Authorization(fields["Access"], tuple(fields["SignedHeaders"].split(";")), fields["Signature"])
    except KeyError:
        return None


def expected_signature(
    *,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    signed_headers: Sequence[str],
    body: bytes,
    secret_key: str,
) -> str:
    """What the gateway computes from the request as it arrived (server side)."""
    lower = {k.lower(): v.strip() for k, v in headers.items()}
    canonical = canonical_request(
        method, raw_path, parse_query(raw_query), lower, signed_headers, payload_hash(body, lower)
    )
    return signature(secret_key, string_to_sign(lower.get("x-sdk-date", ""), canonical))
