"""A stand-in for ModelArts and IAM that checks requests like the real ones.

- ``GET /v1/{project_id}/job/resource-specs``: the answer in the exact shape
  of the API doc, with capacity from the scenario's timeline.
- AK/SK signatures are verified the way the gateway does: the canonical
  request is rebuilt from what arrived (method, raw path, raw query, the
  signed headers, the body) and compared; failures answer 401 ``APIGW.0301``
  with the gateway's messages, a date outside +-15 minutes is "signature
  expired" with the server time, and 5 failures in a row lock the key for
  5 minutes.
- IAM: ``POST /v3/auth/tokens`` (password; the token in ``X-Subject-Token``)
  and ``GET /v3/projects?name=``; tokens expire and are checked per project.
- Faults on demand for tests (:meth:`Simulator.inject`), and a small control
  API under ``/_sim/`` for the command line and the demo.

Thread-safe: tests change capacity and inject faults from their own thread
while the server runs in another.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import formatdate
from typing import Any
from urllib.parse import unquote

import anyio

from ..api import signer
from ..httpserver import Abort, Request, Response
from .scenario import SPEC_FIELDS, Scenario, SimAccount, SimProject, SimSpec, load_scenario

SKEW_LIMIT = 15 * 60.0
LOCKOUT_AFTER = 5
LOCKOUT_FOR = 300.0


@dataclass
class Fault:
    """One misbehaviour, applied to the next matching request(s).

    ``status``/``body``/``headers`` replace the answer (``body`` may be a dict
    for JSON or a str/bytes sent as is); ``delay`` waits before answering;
    ``trickle`` sends the body a few bytes at a time with this pause between
    pieces; ``reset`` drops the connection; ``size`` pads a valid answer to
    this many bytes.
    """

    status: int | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    trickle: float = 0.0
    reset: bool = False
    size: int = 0
    path: str = "/job/resource-specs"  # applies to requests whose path contains this
    query: str = ""  # ... and whose query string contains this


@dataclass
class RequestRecord:
    at: float
    method: str
    path: str
    query: str
    status: int
    access_key: str | None
    code: str | None
    auth: str  # "aksk", "token" or "none"


@dataclass
class _Token:
    project_id: str
    expires_at: float
    account: SimAccount


class Simulator:
    def __init__(self, scenario: Scenario | None = None, *, clock: Callable[[], float] = time.time):
        self.scenario = scenario or load_scenario()
        self._clock = clock
        self.clock_offset = 0.0  # the server's clock runs this far ahead of the host's
        self._lock = threading.RLock()
        self._start = time.monotonic()
        self._faults: deque[tuple[Fault, int]] = deque()
        self._tokens: dict[str, _Token] = {}
        self._failures: dict[str, int] = {}
        self._locked_until: dict[str, float] = {}
        self.requests: list[RequestRecord] = []
        self.date_header = True
        # Benchmarks: "bytes" adds a counter to every answer (parsed anew each time), "catalog"
        # changes an unwatched field of a spec (a new snapshot each time); "" answers alike.
        self.vary = ""
        self._served = 0

    # -- control (from any thread) ------------------------------------------------------------
    def now(self) -> float:
        return self._clock() + self.clock_offset

    def elapsed(self) -> float:
        return time.monotonic() - self._start

    def spec(self, code: str) -> SimSpec:
        for s in self.scenario.specs:
            if s.code == code:
                return s
        raise KeyError(code)

    def set_spec(self, code: str, **fields: Any) -> None:
        """Change a spec now (creating it if new); its timeline stops applying."""
        with self._lock:
            try:
                spec = self.spec(code)
            except KeyError:
                base = {
                    "spec_id": len(self.scenario.specs) + 1,
                    "core": "8",
                    "cpu": "64",
                    "gpu_num": 1,
                    "gpu_type": "v100",
                    "max_num": 1,
                    "storage": "",
                    "interface_type": 1,
                    "no_resource": False,
                    "unit_num": 1,
                }
                spec = SimSpec({**base, "spec_code": code})
                self.scenario.specs.append(spec)
            current = spec.at(self.elapsed())
            current.update(fields)
            spec.fields = current
            spec.timeline = []

    def remove_spec(self, code: str) -> None:
        with self._lock:
            self.scenario.specs = [s for s in self.scenario.specs if s.code != code]

    def inject(self, fault: Fault, count: int = 1) -> None:
        """Apply ``fault`` to the next ``count`` matching requests (-1: until cleared)."""
        with self._lock:
            self._faults.append((fault, count))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def issue_token(self, project_id: str, ttl: float | None = None, account: SimAccount | None = None) -> str:
        """A token as IAM issues it; tests use it directly for auth = "token"."""
        token = "MII" + secrets.token_urlsafe(1200)
        expires = self.now() + (ttl if ttl is not None else self.scenario.token_ttl)
        with self._lock:
            self._tokens[token] = _Token(project_id, expires, account or self.scenario.accounts[0])
        return token

    def add_project(self, project_id: str, name: str) -> None:
        with self._lock:
            self.scenario.projects.append(SimProject(project_id, name))

    def expire_tokens(self) -> None:
        with self._lock:
            for token in self._tokens.values():
                token.expires_at = 0.0

    def records(self, path: str = "/job/resource-specs") -> list[RequestRecord]:
        with self._lock:
            return [r for r in self.requests if path in r.path]

    def current_specs(self, job_type: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            elapsed = self.elapsed()
            out = []
            for spec in self.scenario.specs:
                if job_type and job_type not in spec.job_types:
                    continue
                values = spec.at(elapsed)
                out.append(
                    {k: values.get(k) for k in SPEC_FIELDS} | {k: v for k, v in values.items() if k not in SPEC_FIELDS}
                )
            return out

    # -- HTTP ---------------------------------------------------------------------------------
    async def handle(self, request: Request) -> Response:
        path = unquote(request.path)
        if path.startswith("/_sim/"):
            return self._control(request, path)
        fault = self._take_fault(path, request.query)
        if fault is not None and fault.delay:
            await anyio.sleep(fault.delay)
        if fault is not None and fault.reset:
            self._record(request, 0, None, None, "none")
            raise Abort()
        if fault is not None and fault.status is not None:
            response = self._fault_response(fault)
            self._record(request, fault.status, None, _code_of(fault.body), "none")
            return self._finish(response, fault)
        parts = [p for p in path.split("/") if p]
        if request.method == "POST" and path.rstrip("/") == "/v3/auth/tokens":
            response = self._issue_token(request)
        elif request.method == "GET" and path.rstrip("/") in ("/v3/projects", "/v3/auth/projects"):
            response = self._list_projects(request)
        elif (
            request.method == "GET" and len(parts) == 4 and parts[0] == "v1" and parts[2:] == ["job", "resource-specs"]
        ):
            response = self._resource_specs(request, parts[1])
        else:
            response = _gateway_error(
                404, "APIGW.0101", "The API does not exist or has not been published in the environment"
            )
            self._record(request, 404, None, "APIGW.0101", "none")
        return self._finish(response, fault)

    def _finish(self, response: Response, fault: Fault | None) -> Response:
        if self.date_header:
            response.headers.append(("Date", formatdate(self.now(), usegmt=True)))
        response.headers.append(("X-Request-Id", secrets.token_hex(16)))
        if fault is None:
            return response
        for k, v in fault.headers.items():
            response.headers.append((k, v))
        if fault.size and len(response.body) < fault.size:
            response.body = _pad_json(response.body, fault.size)
        if fault.trickle:
            body, pause = response.body, fault.trickle

            async def pieces() -> AsyncIterator[bytes]:
                for i in range(0, len(body), 16):
                    yield body[i : i + 16]
                    await anyio.sleep(pause)

            response.headers.append(("Content-Length", str(len(body))))
            response.stream = pieces
        return response

    def _take_fault(self, path: str, query: str) -> Fault | None:
        with self._lock:
            for i, (fault, count) in enumerate(self._faults):
                if fault.path in path and fault.query in query:
                    if count > 0:
                        count -= 1
                        if count == 0:
                            del self._faults[i]
                        else:
                            self._faults[i] = (fault, count)
                    return fault
        return None

    def _fault_response(self, fault: Fault) -> Response:
        assert fault.status is not None
        body = fault.body
        if isinstance(body, (dict, list)):
            return Response.json(body, fault.status)
        if isinstance(body, str):
            body = body.encode("utf-8")
        content_type = "text/html" if body and body.lstrip().startswith(b"<") else "application/json"
        return Response(fault.status, body or b"", [("Content-Type", content_type)])

    def _record(self, request: Request, status: int, ak: str | None, code: str | None, auth: str) -> None:
        with self._lock:
            self.requests.append(
                RequestRecord(time.time(), request.method, request.path, request.query, status, ak, code, auth)
            )
            if len(self.requests) > 100000:
                del self.requests[:50000]

    # -- authentication -----------------------------------------------------------------------
    def _authenticate(self, request: Request) -> tuple[SimAccount | None, str | None, Response | None, str]:
        """(account, token project or None, error response, auth kind)."""
        token = request.headers.get("x-auth-token")
        if token is not None:
            with self._lock:
                issued = self._tokens.get(token)
            if issued is None:
                return (
                    None,
                    None,
                    _gateway_error(401, "APIGW.0301", "Incorrect IAM authentication information: decrypt token fail"),
                    "token",
                )
            if issued.expires_at <= self.now():
                return None, None, _gateway_error(401, "APIGW.0307", "The token must be updated."), "token"
            return issued.account, issued.project_id, None, "token"
        header = request.headers.get("authorization")
        if header is None:
            return (
                None,
                None,
                _gateway_error(
                    401, "APIGW.0301", "Incorrect IAM authentication information: Authorization header not found"
                ),
                "none",
            )
        auth = signer.parse_authorization(header)
        if auth is None:
            return (
                None,
                None,
                _gateway_error(
                    401, "APIGW.0301", "Incorrect IAM authentication information: unsupported Authorization header"
                ),
                "aksk",
            )
        ak = auth.access_key
        now = self.now()
        with self._lock:
            if self._locked_until.get(ak, 0) > now:
                return (
                    None,
                    None,
                    _gateway_error(
                        401,
                        "APIGW.0301",
                        "Incorrect IAM authentication information: AK access failed to reach the limit,forbidden.",
                    ),
                    "aksk",
                )
        account = next((a for a in self.scenario.accounts if a.access_key == ak), None)
        error = None
        if account is None or not account.secret_key:
            error = f"Incorrect IAM authentication information: ak {ak} not exist"
        else:
            date = request.headers.get("x-sdk-date", "")
            try:
                signed_at = signer.parse_sdk_date(date)
            except ValueError:
                signed_at = None
            if "x-sdk-date" not in auth.signed_headers or "host" not in auth.signed_headers:
                error = (
                    "Incorrect IAM authentication information: verify aksk signature fail, "
                    "host and x-sdk-date must be signed"
                )
            elif signed_at is None:
                error = "Incorrect IAM authentication information: x-sdk-date format is invalid"
            elif abs(signed_at - now) > SKEW_LIMIT:
                server = datetime.fromtimestamp(now, timezone.utc).strftime(signer.DATE_FORMAT)
                error = (
                    f"Incorrect IAM authentication information: calc aksk signature fail:"
                    f"signature expired, signature time:{date}, server time:{server}"
                )
            else:
                expected = signer.expected_signature(
                    method=request.method,
                    raw_path=request.path,
                    raw_query=request.query,
                    headers=request.headers,
                    signed_headers=auth.signed_headers,
                    body=request.body,
                    secret_key=account.secret_key,
                )
                if not secrets.compare_digest(expected, auth.signature):
                    error = "Incorrect IAM authentication information: verify aksk signature fail"
                elif account.security_token and (
                    request.headers.get("x-security-token") != account.security_token
                    or "x-security-token" not in auth.signed_headers
                ):
                    error = "Incorrect IAM authentication information: security token is invalid or not signed"
        if error is not None:
            with self._lock:
                count = self._failures.get(ak, 0) + 1
                self._failures[ak] = count
                if count >= LOCKOUT_AFTER:
                    self._locked_until[ak] = now + LOCKOUT_FOR
                    self._failures[ak] = 0
            return None, None, _gateway_error(401, "APIGW.0301", error), "aksk"
        with self._lock:
            self._failures[ak] = 0
        return account, None, None, "aksk"

    def _issue_token(self, request: Request) -> Response:
        try:
            data = json.loads(request.body)
            identity = data["auth"]["identity"]
            user = identity["password"]["user"]
            name, password, domain = user["name"], user["password"], user["domain"]["name"]
            scope = data["auth"].get("scope", {}).get("project", {})
        except (ValueError, KeyError, TypeError):
            self._record(request, 400, None, "IAM.0011", "none")
            return Response.json({"error_msg": "The request body is invalid.", "error_code": "IAM.0011"}, 400)
        account = next(
            (a for a in self.scenario.accounts if a.username == name and a.domain == domain and a.password == password),
            None,
        )
        if account is None:
            self._record(request, 401, None, "IAM.0001", "none")
            return Response.json(
                {
                    "error": {"code": 401, "message": "The username or password is wrong.", "title": "Unauthorized"},
                    "error_msg": "The username or password is wrong.",
                    "error_code": "IAM.0001",
                },
                401,
            )
        project = next(
            (p for p in self.scenario.projects if p.id == scope.get("id") or p.name == scope.get("name")), None
        )
        if project is None:
            self._record(request, 400, None, "IAM.0004", "none")
            return Response.json({"error_msg": "The project does not exist.", "error_code": "IAM.0004"}, 400)
        now = self.now()
        token = self.issue_token(project.id, account=account)
        expires = self._tokens[token].expires_at
        self._record(request, 201, None, None, "password")
        body = {
            "token": {
                "methods": ["password"],
                "expires_at": _iso(expires),
                "issued_at": _iso(now),
                "project": {
                    "id": project.id,
                    "name": project.name,
                    "domain": {"id": account.domain_id, "name": domain},
                },
                "user": {"name": name, "domain": {"id": account.domain_id, "name": domain}},
            }
        }
        return Response.json(body, 201, [("X-Subject-Token", token)])

    def _list_projects(self, request: Request) -> Response:
        account, _, error, kind = self._authenticate(request)
        if error is not None:
            self._record(request, error.status, None, _code_of(error.body), kind)
            return error
        names = [v for k, v in signer.parse_query(request.query) if k == "name"]
        projects = [p for p in self.scenario.projects if not names or p.name in names]
        self._record(request, 200, account.access_key if account else None, None, kind)
        return Response.json(
            {
                "projects": [
                    {
                        "id": p.id,
                        "name": p.name,
                        "domain_id": account.domain_id if account else "",
                        "parent_id": account.domain_id if account else "",
                        "enabled": True,
                        "is_domain": False,
                        "description": "",
                    }
                    for p in projects
                ],
                "links": {"self": "https://iam.example.com/v3/projects", "next": None, "previous": None},
            }
        )

    def _resource_specs(self, request: Request, project_id: str) -> Response:
        account, token_project, error, kind = self._authenticate(request)
        ak = account.access_key if account and kind == "aksk" else None
        if error is not None:
            self._record(request, error.status, ak or _ak_of(request), _code_of(error.body), kind)
            return error
        if token_project is not None and token_project != project_id:
            self._record(request, 403, ak, "ModelArts.0210", kind)
            return Response.json(
                {
                    "is_success": False,
                    "error_code": "ModelArts.0210",
                    "error_message": "The project ID in the URL does not match the token.",
                },
                403,
            )
        if not any(p.id == project_id for p in self.scenario.projects):
            self._record(request, 400, ak, "ModelArts.0210", kind)
            return Response.json(
                {"is_success": False, "error_code": "ModelArts.0210", "error_message": "Invalid project ID."}, 400
            )
        params = dict(signer.parse_query(request.query))
        job_type = params.get("job_type")
        problem = None
        if job_type is not None and job_type not in ("train", "inference"):
            problem = "job_type"
        for name in ("engine_id", "project_type"):
            if name in params and not params[name].isdigit():
                problem = name
        if "project_type" in params and params["project_type"].isdigit() and int(params["project_type"]) > 3:
            problem = "project_type"
        if problem:
            self._record(request, 400, ak, "ModelArts.0101", kind)
            return Response.json(
                {"is_success": False, "error_code": "ModelArts.0101", "error_message": f"Invalid parameter {problem}."},
                400,
            )
        specs = self.current_specs(job_type)
        self._record(request, 200, ak, None, kind)
        body: dict[str, Any] = {"is_success": True, "spec_total_count": len(specs), "specs": specs}
        if self.vary:
            self._served += 1
            if self.vary == "catalog" and specs:
                specs[0]["unit_num"] = self._served
            else:
                body["served"] = self._served
        return Response.json(body)

    # -- control API --------------------------------------------------------------------------
    def _control(self, request: Request, path: str) -> Response:
        if not _is_loopback(request.client):
            return Response.json({"error": "the control API answers loopback clients only"}, 403)
        try:
            if path == "/_sim/specs" and request.method == "GET":
                return Response.json({"specs": self.current_specs()})
            if path.startswith("/_sim/specs/") and request.method == "POST":
                self.set_spec(path.removeprefix("/_sim/specs/"), **request.json())
                return Response.json({"ok": True})
            if path.startswith("/_sim/specs/") and request.method == "DELETE":
                self.remove_spec(path.removeprefix("/_sim/specs/"))
                return Response.json({"ok": True})
            if path == "/_sim/faults" and request.method == "POST":
                fault, count = _fault_from(request.json())
                self.inject(fault, count)
                return Response.json({"ok": True})
            if path == "/_sim/faults" and request.method == "DELETE":
                self.clear_faults()
                return Response.json({"ok": True})
            if path == "/_sim/vary" and request.method == "POST":
                self.vary = str(request.json().get("mode", ""))
                return Response.json({"ok": True})
            if path == "/_sim/clock" and request.method == "POST":
                offset = request.json().get("offset", 0)
                if isinstance(offset, bool) or not isinstance(offset, (int, float)) or not abs(offset) < 1e9:
                    raise ValueError("offset: expected seconds, a number within +-1e9")
                self.clock_offset = float(offset)
                return Response.json({"ok": True})
            if path == "/_sim/requests" and request.method == "GET":
                return Response.json({"requests": [r.__dict__ for r in self.records("")]})
        except (ValueError, TypeError) as exc:
            return Response.json({"error": str(exc)}, 400)
        return Response.json({"error": "unknown control call"}, 404)


def _fault_from(data: Any) -> tuple[Fault, int]:
    """A Fault from the control API's JSON, every field checked (a bad one is a 400, not a crash)."""
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    data = dict(data)

    def number(name: str, low: float, high: float, default: float = 0.0) -> float:
        value = data.pop(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise ValueError(f"{name}: expected a number from {low:g} to {high:g}")
        return float(value)

    count = int(number("count", -1, 1_000_000, 1))
    status = data.pop("status", None)
    if status is not None and (isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599):
        raise ValueError("status: expected an HTTP status from 100 to 599")
    headers = data.pop("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise ValueError("headers: expected an object of strings")
    reset = data.pop("reset", False)
    if not isinstance(reset, bool):
        raise ValueError("reset: expected true or false")
    fault = Fault(
        status=status,
        body=data.pop("body", None),
        headers=headers,
        delay=number("delay", 0, 3600),
        trickle=number("trickle", 0, 60),
        reset=reset,
        size=int(number("size", 0, 64 * 1024 * 1024)),
        path=str(data.pop("path", "/job/resource-specs")),
        query=str(data.pop("query", "")),
    )
    if data:
        raise ValueError(f"unknown fields: {', '.join(sorted(data))}")
    return fault, count


def _gateway_error(status: int, code: str, message: str) -> Response:
    return Response.json({"error_code": code, "error_msg": message, "request_id": secrets.token_hex(16)}, status)


def _code_of(body: Any) -> str | None:
    if isinstance(body, (bytes, str)):
        try:
            body = json.loads(body)
        except ValueError:
            return None
    if isinstance(body, dict):
        code = body.get("error_code")
        return str(code) if code else None
    return None


def _ak_of(request: Request) -> str | None:
    auth = signer.parse_authorization(request.headers.get("authorization", ""))
    return auth.access_key if auth else None


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _pad_json(body: bytes, size: int) -> bytes:
    """A valid JSON object of at least ``size`` bytes: the answer plus a large unknown field."""
    data = json.loads(body)
    data["padding"] = "x" * max(0, size - len(body))
    return json.dumps(data).encode()


def _is_loopback(client: tuple[str, int] | None) -> bool:
    if client is None:
        return True
    return client[0] in ("127.0.0.1", "::1") or client[0].startswith("127.")
