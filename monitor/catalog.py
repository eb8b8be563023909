"""The seam for one spec catalog: its request, its answer, its spec key.

The training-job spec catalog (``GET /v1/{project_id}/job/resource-specs``)
is the first; notebook, inference and dedicated-pool flavors carry sold-out
flags too and would each be another class with the same three members.

Core module: parsing is pure. It is lenient where the meaning is clear
(numbers and booleans as strings, unknown fields, exact duplicates) and strict
where it is not: anything else makes the whole poll fail with a reason, because
a partial answer must never produce spec events.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any, TypeGuard

from .errors import PollError
from .model import Query, Snapshot, Spec

MAX_ERROR_TEXT = 200


def error_fields(data: Any) -> tuple[str | None, str | None, str | None]:
    """(code, message, request_id) from any of the upstream error body shapes.

    ModelArts v1 ``error_code/error_message`` (or ``error_msg``), v2 and API
    gateway ``error_code/error_msg/request_id``, camel case ``errorCode/errorMsg``,
    IAM ``{"error": {"code", "message", "title"}}`` and ``code/message``.
    """
    if not isinstance(data, dict):
        return None, None, None

    def text(value: Any) -> str | None:
        if value is None or isinstance(value, (dict, list)):
            return None
        value = printable(str(value).strip())
        return value[:MAX_ERROR_TEXT] or None

    request_id = text(data.get("request_id") or data.get("requestId"))
    for code_key, msg_keys in (
        ("error_code", ("error_message", "error_msg", "errorMsg", "message")),
        ("errorCode", ("errorMsg", "error_msg", "errorMessage", "message")),
        ("code", ("message", "msg", "error_msg")),
    ):
        if code_key in data and text(data.get(code_key)):
            message = next((text(data[k]) for k in msg_keys if text(data.get(k))), None)
            return text(data[code_key]), message, request_id
    nested = data.get("error")
    if isinstance(nested, dict):
        code, message, inner_id = error_fields(nested)
        if message is None:
            message = text(nested.get("title"))
        return code, message, request_id or inner_id
    if isinstance(nested, str):
        return None, text(nested), request_id
    return None, None, request_id


class JobSpecCatalog:
    """``GET /v1/{project_id}/job/resource-specs``: training-job specs with ``no_resource``."""

    name = "job-specs"

    @staticmethod
    def path(project_id: str) -> str:
        return f"/v1/{project_id}/job/resource-specs"

    @staticmethod
    def params(query: Query) -> list[tuple[str, str]]:
        params = [("engine_id", str(query.engine_id)), ("project_type", str(query.project_type))]
        if query.job_type:
            params.append(("job_type", query.job_type))
        return params

    @staticmethod
    def parse(body: bytes, now: float) -> Snapshot:
        """The snapshot in a 2xx answer, or PollError saying what is wrong with it."""
        data = decode_json(body)
        if not isinstance(data, dict):
            raise PollError(f"malformed answer: expected a JSON object, got {_kind(data)}")
        success = data.get("is_success", True)
        code, message, request_id = error_fields(data)
        if success is False or (isinstance(success, str) and success.strip().lower() == "false"):
            raise api_error_from_fields(code, message, request_id, default="the API answered is_success=false")
        if "specs" not in data:
            if code:
                raise api_error_from_fields(code, message, request_id, default="error answer")
            raise PollError('malformed answer: no "specs" list')
        raw_specs = data["specs"]
        if not isinstance(raw_specs, list):
            raise PollError(f'malformed answer: "specs" is {_kind(raw_specs)}, expected a list')
        total = data.get("spec_total_count")
        if total is not None:
            count = _as_int(total)
            if count is None:
                raise PollError(f"malformed answer: spec_total_count is {_show(total)}")
            if count != len(raw_specs):
                raise PollError(
                    f"incomplete answer: spec_total_count is {count} but {len(raw_specs)} specs were listed"
                )
        return Snapshot(now, _build_specs(raw_specs))


def decode_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        start = body[:60].decode("utf-8", "replace").strip().replace("\n", " ")
        what = "an HTML page" if start.lower().startswith(("<!doctype", "<html")) else "not JSON"
        raise PollError(f"malformed answer: {what} ({start!r}...)" if start else "empty answer") from None


def api_error_from_fields(
    code: str | None, message: str | None, request_id: str | None, *, default: str, status: int | None = None
) -> PollError:
    from .api.errors import classify

    return classify(code, message, status=status, request_id=request_id, default=default)


def _build_specs(raw_specs: Sequence[Any]) -> tuple[Spec, ...]:
    by_code: dict[str, Spec] = {}
    for index, raw in enumerate(raw_specs):
        spec = _parse_spec(index, raw)
        seen = by_code.get(spec.spec_code)
        if seen is None:
            by_code[spec.spec_code] = spec
        elif seen != spec:
            # Which one is right cannot be told; guessing could raise a false alert.
            raise PollError(f"ambiguous answer: spec {spec.spec_code!r} is listed twice with different values")
        # an exact repeat says nothing new
    return tuple(by_code.values())


def _parse_spec(index: int, raw: Any) -> Spec:
    if type(raw) is not dict:
        raise PollError(f"malformed answer: specs[{index}] is {_kind(raw)}, expected an object")
    get = raw.get
    code, no_resource, max_num, gpu_num, gpu_type = (
        get("spec_code"),
        get("no_resource"),
        get("max_num"),
        get("gpu_num"),
        get("gpu_type"),
    )
    core, cpu, storage = get("core"), get("cpu"), get("storage")
    # The common case (values of the documented types) takes no detours.
    if not (
        type(code) is str
        and code
        and code.isprintable()  # no newline (a forged log line), no lone surrogate (unstorable)
        and not code[0].isspace()
        and not code[-1].isspace()
        and type(no_resource) is bool
        and type(max_num) is int
        and max_num >= 0
        and type(gpu_num) is int
        and gpu_num >= 0
        and type(gpu_type) is str
    ):
        code, no_resource, max_num, gpu_num, gpu_type = _lenient_fields(index, raw)
    spec_id, unit_num, interface_type = get("spec_id"), get("unit_num"), get("interface_type")
    return Spec(
        key=code,
        spec_code=code,
        no_resource=no_resource,
        max_num=max_num,
        gpu_num=gpu_num,
        gpu_type=printable(gpu_type.strip()),
        spec_id=spec_id if type(spec_id) is int else _as_int(spec_id),
        core=core if _plain(core) else _as_text(core),
        cpu=cpu if _plain(cpu) else _as_text(cpu),
        unit_num=unit_num if type(unit_num) is int else _as_int(unit_num),
        storage=storage if _plain(storage) else _as_text(storage),
        interface_type=interface_type if type(interface_type) is int else _as_int(interface_type),
    )


def _lenient_fields(index: int, raw: dict[str, Any]) -> tuple[str, bool, int, int, str]:
    """The essential fields read leniently (numbers and booleans as strings), or PollError."""
    code = raw.get("spec_code")
    if not isinstance(code, str) or not code.strip():
        raise PollError(f"malformed answer: specs[{index}].spec_code is {_show(code)}")
    code = code.strip()
    if not code.isprintable():
        raise PollError(f"malformed answer: specs[{index}].spec_code holds control or invalid characters")
    where = f"spec {code!r}"
    no_resource = _as_bool(raw.get("no_resource"))
    if no_resource is None:
        raise PollError(f"malformed answer: {where} no_resource is {_show(raw.get('no_resource'))}")
    max_num = _as_int(raw.get("max_num"))
    if max_num is None or max_num < 0:
        raise PollError(f"malformed answer: {where} max_num is {_show(raw.get('max_num'))}")
    gpu_num = _as_int(raw.get("gpu_num"))
    if gpu_num is None or gpu_num < 0:
        raise PollError(f"malformed answer: {where} gpu_num is {_show(raw.get('gpu_num'))}")
    gpu_type = raw.get("gpu_type")
    if gpu_type is None:
        gpu_type = ""
    elif not isinstance(gpu_type, str):
        raise PollError(f"malformed answer: {where} gpu_type is {_show(gpu_type)}")
    return code, no_resource, max_num, gpu_num, gpu_type


def _plain(value: Any) -> TypeGuard[str]:
    """A short printable string without surrounding spaces: kept as it is."""
    return type(value) is str and len(value) <= 64 and value.isprintable() and value == value.strip()


def printable(text: str) -> str:
    """``text`` with control characters and lone surrogates replaced (they would forge log lines
    or fail to store)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else "?" for c in text)


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "1"):
            return True
        if text in ("false", "0"):
            return False
    return None


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else None
    if isinstance(value, str):
        text = value.strip()
        if len(text) <= 18 and text.isascii() and (text.isdigit() or (text[:1] == "-" and text[1:].isdigit())):
            return int(text)
    return None


def _as_text(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, (int, str)):
        return printable(str(value).strip()[:64])
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:g}"
    return ""


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _show(value: Any) -> str:
    if value is None:
        return "missing"
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."
