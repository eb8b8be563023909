"""The ModelArts and IAM client: authenticated requests, bounded answers, classified errors.

One client per account, over an injected ``httpx.AsyncClient``. Every failure
leaves as a :class:`~monitor.errors.PollError` with a plain-words reason; the
daemon never sees an httpx exception.

- AK/SK: each attempt is signed at send time, with the URL built by us in
  canonical form (httpx would re-encode ``params=``), and only headers httpx
  will not change afterwards are signed: Host, X-Sdk-Date, X-Project-Id and
  X-Security-Token.
- Password: an IAM token per project, cached, renewed an hour before it
  expires and once on an answer saying it must be updated.
- Token: a static token from a file, re-read when it is rejected.
- Clock skew: measured from every answer's Date header and from "signature
  expired" answers; requests are signed with the corrected time.
- Lockout safety: after a credentials failure the account makes no request at
  all for 5 minutes, whatever the number of watches, because the gateway locks
  a key after 5 failed signatures in a row.
- Answers are read with a whole-request deadline and a 5 MiB cap.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx

from ..catalog import JobSpecCatalog, decode_json, error_fields
from ..config import Account
from ..errors import PollError
from ..model import Query, Snapshot, Spec
from . import signer
from .errors import CLOCK, CREDENTIALS, PERMANENT, REFRESH, TRANSIENT, classify

log = logging.getLogger("monitor.api")

MAX_BODY = 5 * 1024 * 1024
LOCKOUT_PAUSE = 300.0
TOKEN_RENEW_BEFORE = 3600.0
SKEW_NOTICE = 2.0  # smaller offsets are Date-header rounding and network delay
SKEW_ALERT = 300.0
_SERVER_TIME = re.compile(r"server time:\s*(\d{8}T\d{6}Z)")


class Answer:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: httpx.Headers, body: bytes):
        self.status = status
        self.headers = headers
        self.body = body


def build_http_client(account: Account, timeout: float, max_connections: int = 16) -> httpx.AsyncClient:
    verify: Any = True
    if account.ca_bundle is not None:
        import ssl

        verify = ssl.create_default_context(cafile=str(account.ca_bundle))
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        verify=verify,
        follow_redirects=False,
        trust_env=True,
        headers={"User-Agent": "modelarts-monitor"},
    )


class ModelArtsClient:
    def __init__(
        self,
        account: Account,
        http: httpx.AsyncClient,
        *,
        timeout: float = 15.0,
        clock: Callable[[], float] = time.time,
    ):
        self.account = account
        self.http = http
        self.timeout = timeout
        self.clock = clock
        self.skew = 0.0  # server time minus our time
        self._last_date = ""
        self._skew_logged = 0.0
        self.blocked_until = 0.0  # monotonic: no requests before this (lockout safety)
        self.blocked_error: PollError | None = None
        # Until the key has been accepted once (and again after a rejection), requests of this
        # account go one at a time, so N watches cannot fail N signatures at once.
        self._trusted = False
        self._gate = anyio.Lock()
        self._projects: dict[str, str] = {}
        self._last_answer: dict[str, tuple[bytes, tuple[Spec, ...]]] = {}  # query key -> (body, specs)
        self._tokens: dict[str, tuple[str, float]] = {}  # project id -> (token, expires_at)
        self._static_token = account.token

    # -- public -------------------------------------------------------------------------------
    async def fetch_snapshot(self, query: Query, catalog: type[JobSpecCatalog] = JobSpecCatalog) -> Snapshot:
        """One poll: the snapshot, or PollError."""
        project_id = query.project_id or await self.resolve_project(query.region)
        base = self.account.endpoint_for(query.region)
        answer = await self._call(
            "GET",
            base + catalog.path(project_id),
            catalog.params(query),
            region=query.region,
            project_id=project_id,
        )
        # Most answers repeat the last one byte for byte; parsing them again would only
        # rebuild the same specs. (The same tuple also lets detection see "no change" at once.)
        last = self._last_answer.get(query.key)
        if last is not None and last[0] == answer.body:
            return Snapshot(self.clock(), last[1])
        snapshot = catalog.parse(answer.body, self.clock())
        self._last_answer[query.key] = (answer.body, snapshot.specs)
        return snapshot

    async def resolve_project(self, region: str) -> str:
        """The project ID of ``region``, looked up through IAM once and cached."""
        if region in self._projects:
            return self._projects[region]
        if self.account.auth == "password":
            await self._token_for(region, None)  # a token scoped by name tells its project id
            return self._projects[region]
        iam = self.account.iam_endpoint_for(region)
        answer = await self._call("GET", iam + "/v3/projects", [("name", region)], region=region, project_id=None)
        data = decode_json(answer.body)
        projects = data.get("projects") if isinstance(data, dict) else None
        if not isinstance(projects, list):
            raise PollError("malformed IAM answer: no projects list", category=TRANSIENT)
        ids = [p.get("id") for p in projects if isinstance(p, dict) and p.get("name") == region]
        ids = [i for i in ids if isinstance(i, str) and i]
        trace = answer.headers.get("X-IAM-Trace-Id") or answer.headers.get("X-Request-Id")
        if not ids:
            raise PollError(
                f"IAM knows no project named {region!r} for this account: check the region, "
                "or set project_id in the watch",
                category=PERMANENT,
                request_id=trace,
            )
        if len(ids) > 1:
            raise PollError(
                f"IAM lists several projects named {region!r}: set project_id in the watch",
                category=PERMANENT,
                request_id=trace,
            )
        project_id = str(ids[0])
        self._projects[region] = project_id
        log.info("project ID for region %s looked up through IAM: %s", region, project_id)
        return project_id

    # -- requests -----------------------------------------------------------------------------
    async def _call(
        self,
        method: str,
        url: str,
        params: Sequence[tuple[str, str]],
        *,
        region: str,
        project_id: str | None,
        body: bytes = b"",
    ) -> Answer:
        if self._trusted:
            return await self._call_authenticated(method, url, params, region=region, project_id=project_id, body=body)
        async with self._gate:
            return await self._call_authenticated(method, url, params, region=region, project_id=project_id, body=body)

    async def _call_authenticated(
        self,
        method: str,
        url: str,
        params: Sequence[tuple[str, str]],
        *,
        region: str,
        project_id: str | None,
        body: bytes = b"",
    ) -> Answer:
        """Send with the account's authentication; renew/resync once when the answer says so."""
        now = time.monotonic()
        if self.blocked_until > now and self.blocked_error is not None:
            wait = self.blocked_until - now
            raise PollError(
                f"{self.blocked_error.reason}; not retrying for another {int(wait) + 1} s "
                "(the gateway locks a key after repeated failures)",
                category=CREDENTIALS,
                code=self.blocked_error.code,
                request_id=self.blocked_error.request_id,
            )
        retried: set[str] = set()
        while True:
            headers = await self._auth_headers(method, url, params, region, project_id, body)
            answer = await self._send(method, url, params, headers, body)
            self._measure_skew(answer)
            if 200 <= answer.status < 300:
                self._trusted = True
                return answer
            error = self._error(answer)
            self._trusted = error.category not in (CREDENTIALS, CLOCK, REFRESH)
            if error.category == CLOCK and CLOCK not in retried:
                retried.add(CLOCK)
                self._resync_from(error)
                continue
            if error.category == REFRESH and REFRESH not in retried and self._can_refresh(project_id, region):
                retried.add(REFRESH)
                continue
            if error.category in (CREDENTIALS, CLOCK):
                self.blocked_until = time.monotonic() + LOCKOUT_PAUSE
                self.blocked_error = error
            if error.category == REFRESH:
                if self.account.auth == "token":
                    source = self._static_token.source if self._static_token else "token"
                    error.reason = (
                        f"the token was rejected and {source} holds no newer one: renew the token there "
                        f"({error.code or 'HTTP ' + str(error.status)})"
                    )
                    error.category = CREDENTIALS
                else:
                    error.category = PERMANENT
            raise error

    async def _send(
        self, method: str, url: str, params: Sequence[tuple[str, str]], headers: dict[str, str], body: bytes
    ) -> Answer:
        query = signer.canonical_query(params)
        full = f"{url}?{query}" if query else url
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2] or url  # host:port, so a wrong port shows
        try:
            with anyio.fail_after(self.timeout):
                async with self.http.stream(method, full, headers=headers, content=body or None) as resp:
                    chunks: list[bytes] = []
                    size = 0
                    async for chunk in resp.aiter_bytes():
                        size += len(chunk)
                        if size > MAX_BODY:
                            raise PollError(
                                f"the answer from {host} is larger than {MAX_BODY // (1024 * 1024)} MiB; "
                                "not reading further",
                                category=TRANSIENT,
                                status=resp.status_code,
                            )
                        chunks.append(chunk)
                    return Answer(resp.status_code, resp.headers, b"".join(chunks))
        except TimeoutError:
            raise PollError(
                f"no complete answer from {host} within {self.timeout:g}s (timeout)", category=TRANSIENT
            ) from None
        except httpx.ConnectTimeout:
            raise PollError(f"cannot connect to {host} within the timeout", category=TRANSIENT) from None
        except httpx.TimeoutException:
            raise PollError(f"{host} stopped answering (read timeout)", category=TRANSIENT) from None
        except httpx.ConnectError as exc:
            text = str(exc)
            if "CERTIFICATE_VERIFY_FAILED" in text or "certificate" in text.lower():
                raise PollError(
                    f"the TLS certificate of {host} is not trusted: set ca_bundle for the account "
                    "if it uses a private CA",
                    category=PERMANENT,
                ) from None
            reason = _connect_reason(exc)
            raise PollError(f"cannot connect to {host}: {reason}", category=TRANSIENT) from None
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            raise PollError(f"the connection to {host} broke mid-answer ({_short(exc)})", category=TRANSIENT) from None
        except httpx.HTTPError as exc:
            raise PollError(f"HTTP error talking to {host}: {_short(exc)}", category=TRANSIENT) from None

    def _error(self, answer: Answer) -> PollError:
        request_id = answer.headers.get("X-Request-Id")
        try:
            data = decode_json(answer.body)
        except PollError:
            data = None
        code, message, body_request_id = error_fields(data)
        retry_after = _retry_after(answer.headers.get("Retry-After"), self.clock())
        default = None
        if data is None and answer.body:
            default = f"unexpected answer (HTTP {answer.status}, not JSON)"
        error = classify(
            code,
            message,
            status=answer.status,
            request_id=request_id or body_request_id,
            retry_after=retry_after,
            default=default,
        )
        if data is None and answer.body and code is None:
            error.reason += " (the answer was not JSON)"
        return error

    # -- authentication -----------------------------------------------------------------------
    async def _auth_headers(
        self, method: str, url: str, params: Sequence[tuple[str, str]], region: str, project_id: str | None, body: bytes
    ) -> dict[str, str]:
        acc = self.account
        if acc.auth == "aksk":
            assert acc.access_key is not None and acc.secret_key is not None
            headers: dict[str, str] = {}
            if project_id:
                headers["X-Project-Id"] = project_id
            if acc.security_token is not None:
                headers["X-Security-Token"] = acc.security_token.reveal()
            if body:
                headers["Content-Type"] = "application/json;charset=utf8"
            signed = signer.sign(
                method=method,
                url=url,
                params=params,
                headers=headers,
                body=body,
                access_key=acc.access_key.reveal(),
                secret_key=acc.secret_key.reveal(),
                timestamp=self.clock() + self.skew,
            )
            return signed.headers
        if acc.auth == "token":
            assert self._static_token is not None
            return {"X-Auth-Token": self._static_token.reveal()}
        token = await self._token_for(region, project_id)
        return {"X-Auth-Token": token}

    def _can_refresh(self, project_id: str | None, region: str) -> bool:
        """Drop a rejected token so the retry gets a fresh one; False if there is none to get."""
        if self.account.auth == "password":
            key = project_id or f"name:{region}"
            self._tokens.pop(key, None)
            if project_id:
                self._tokens.pop(f"name:{region}", None)
            return True
        if self.account.auth == "token" and self._static_token is not None:
            try:
                fresh = self._static_token.reread()
            except ValueError as exc:
                log.warning("cannot re-read the token of account %s: %s", self.account.name, exc)
                return False
            changed = fresh.reveal() != self._static_token.reveal()
            self._static_token = fresh
            return changed
        return False

    async def _token_for(self, region: str, project_id: str | None) -> str:
        key = project_id or f"name:{region}"
        cached = self._tokens.get(key)
        if cached and cached[1] - self.clock() > TOKEN_RENEW_BEFORE:
            return cached[0]
        acc = self.account
        assert acc.password is not None
        scope = {"id": project_id} if project_id else {"name": region}
        payload = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {
                            "name": acc.username,
                            "password": acc.password.reveal(),
                            "domain": {"name": acc.domain},
                        }
                    },
                },
                "scope": {"project": scope},
            }
        }
        import json

        body = json.dumps(payload).encode()
        url = acc.iam_endpoint_for(region) + "/v3/auth/tokens"
        answer = await self._send(
            "POST", url, [("nocatalog", "true")], {"Content-Type": "application/json;charset=utf8"}, body
        )
        self._measure_skew(answer)
        if answer.status not in (200, 201):
            error = self._error(answer)
            if error.category in (REFRESH, CLOCK):
                error.category = CREDENTIALS
            if error.category == CREDENTIALS:
                self.blocked_until = time.monotonic() + LOCKOUT_PAUSE
                self.blocked_error = error
            error.reason = f"getting an IAM token failed: {error.reason}"
            raise error
        token = answer.headers.get("X-Subject-Token")
        data = decode_json(answer.body)
        info = data.get("token") if isinstance(data, dict) else None
        if not token or not isinstance(info, dict):
            raise PollError("malformed IAM answer: no X-Subject-Token header or token body", category=TRANSIENT)
        expires = _parse_iso(info.get("expires_at")) or (self.clock() + 3600 * 12)
        project = info.get("project") if isinstance(info.get("project"), dict) else {}
        if isinstance(project, dict) and isinstance(project.get("id"), str):
            self._projects.setdefault(region, project["id"])
            self._tokens[project["id"]] = (token, expires)
        self._tokens[key] = (token, expires)
        from .. import redact

        redact.register(token)
        log.info(
            "IAM token for account %s renewed; it expires at %s",
            acc.name,
            datetime.fromtimestamp(expires, timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        )
        return str(token)

    # -- clock skew ---------------------------------------------------------------------------
    def _measure_skew(self, answer: Answer) -> None:
        date = answer.headers.get("Date")
        if not date or date == self._last_date:
            return  # whole seconds: the same header says nothing new
        self._last_date = date
        try:
            server = parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return
        # The Date header has whole seconds and arrives after a network delay: ignore small
        # offsets rather than chase noise.
        estimate = server - self.clock()
        self._set_skew(estimate if abs(estimate) >= SKEW_NOTICE else 0.0)

    def _resync_from(self, error: PollError) -> None:
        m = _SERVER_TIME.search(error.reason)
        if m:
            self._set_skew(signer.parse_sdk_date(m[1]) - self.clock())

    def _set_skew(self, skew: float) -> None:
        if abs(skew - self.skew) < SKEW_NOTICE and not (skew == 0.0 and self.skew != 0.0):
            return
        self.skew = skew
        if abs(skew - self._skew_logged) >= 60 or (skew == 0.0) != (self._skew_logged == 0.0):
            self._skew_logged = skew
            if skew:
                log.warning(
                    "the clock here differs from the API's by %+.0f s; signing with the API's "
                    "time (fix the host clock: enable NTP)",
                    skew,
                )
            else:
                log.info("the clock here agrees with the API's again")


def _retry_after(value: str | None, now: float) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # str.isdigit() also accepts "²"
        return min(float(value), 3600.0)
    try:
        when = parsedate_to_datetime(value).timestamp()
    except Exception:
        return None
    return max(0.0, min(when - now, 3600.0))


def _parse_iso(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        text = value.strip().replace("Z", "+00:00")
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def _connect_reason(exc: BaseException) -> str:
    """The innermost OS error says what really happened ("All connection attempts failed" does not)."""
    import errno

    inner: BaseException | None = exc
    texts = []
    while inner is not None:
        code = getattr(inner, "errno", None)
        if code == errno.ECONNREFUSED:
            return "connection refused (is the endpoint right, and is a proxy needed?)"
        if code in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            return "network unreachable"
        texts.append(str(inner))
        inner = inner.__cause__ or inner.__context__
    text = str(exc)
    lowered = " ".join(texts).lower()
    if "name or service not known" in lowered or "nodename nor servname" in lowered or "getaddrinfo" in lowered:
        return "the host name does not resolve (check the endpoint and DNS)"
    if "refused" in lowered:
        return "connection refused"
    if "unreachable" in lowered:
        return "network unreachable"
    return _short(text)


def _short(exc: object) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."
