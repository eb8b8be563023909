"""Parsing the resource-specs answer: lenient where the meaning is clear, strict where not."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.catalog import JobSpecCatalog, error_fields
from monitor.errors import PollError
from monitor.model import Snapshot

NOW = 1_800_000_000.0


def raw_spec(**kw: Any) -> dict[str, Any]:
    base = {
        "spec_id": 1,
        "core": "8",
        "cpu": "64",
        "gpu_num": 1,
        "gpu_type": "v100",
        "spec_code": "modelarts.vm.gpu.v100",
        "max_num": 4,
        "storage": "800",
        "interface_type": 1,
        "no_resource": False,
        "unit_num": 1,
    }
    base.update(kw)
    return base


def answer(*specs: dict[str, Any], **extra: Any) -> bytes:
    body: dict[str, Any] = {"is_success": True, "spec_total_count": len(specs), "specs": list(specs)}
    body.update(extra)
    return json.dumps(body).encode()


def parse(body: bytes) -> Snapshot:
    return JobSpecCatalog.parse(body, NOW)


def test_a_clean_answer() -> None:
    snap = parse(
        answer(
            raw_spec(), raw_spec(spec_id=2, spec_code="modelarts.vm.cpu.8u", gpu_num=0, gpu_type="", no_resource=True)
        )
    )
    v100, cpu = snap.specs
    assert (v100.key, v100.available, v100.max_num, v100.gpu_num, v100.core) == (
        "modelarts.vm.gpu.v100",
        True,
        4,
        1,
        "8",
    )
    assert (cpu.available, cpu.gpu_type) == (False, "")


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("max_num", "4", 4),
        ("max_num", 4.0, 4),
        ("gpu_num", " 8 ", 8),
        ("no_resource", "true", False),
        ("no_resource", "FALSE", True),
        ("no_resource", 1, False),
        ("no_resource", "0", True),
        ("gpu_type", None, ""),
    ],
    ids=lambda v: repr(v),
)
def test_numbers_and_booleans_as_strings_are_read(field: str, value: Any, expected: Any) -> None:
    s = parse(answer(raw_spec(**{field: value}))).specs[0]
    got = {"max_num": s.max_num, "gpu_num": s.gpu_num, "no_resource": s.available, "gpu_type": s.gpu_type}[field]
    assert got == expected


def test_unknown_fields_are_ignored() -> None:
    assert parse(answer(raw_spec(new_field={"x": 1}), surprise=[1, 2])).specs[0].max_num == 4


def test_an_exact_duplicate_is_harmless() -> None:
    body = json.dumps({"is_success": True, "spec_total_count": 2, "specs": [raw_spec(), raw_spec()]})
    assert len(parse(body.encode()).specs) == 1


def test_one_code_listed_twice_with_different_values_is_not_guessed() -> None:
    """Which entry is right cannot be told; a guess could raise a false alert."""
    with pytest.raises(PollError, match="ambiguous answer"):
        parse(answer(raw_spec(spec_id=1), raw_spec(spec_id=99, no_resource=True)))


FAILURES = [
    ("not json", b"<html><body>502 Bad Gateway</body></html>", "an HTML page"),
    ("garbage", b"\xff\xfe\x00", "not JSON"),
    ("empty", b"", "empty answer"),
    ("a list", b"[]", "expected a JSON object"),
    (
        "is_success false",
        json.dumps({"is_success": False, "error_code": "ModelArts.0104", "error_message": "bad job_type"}).encode(),
        "ModelArts.0104",
    ),
    ("is_success 'false'", json.dumps({"is_success": "false", "specs": []}).encode(), "is_success"),
    ("no specs", json.dumps({"is_success": True}).encode(), 'no "specs" list'),
    ("specs not a list", json.dumps({"is_success": True, "specs": {}}).encode(), "expected a list"),
    (
        "count mismatch",
        json.dumps({"is_success": True, "spec_total_count": 3, "specs": [raw_spec()]}).encode(),
        "incomplete answer",
    ),
    ("spec not an object", answer("x"), "expected an object"),  # type: ignore[arg-type]
    ("no spec_code", answer(raw_spec(spec_code=None)), "spec_code"),
    ("no no_resource", answer(raw_spec(no_resource=None)), "no_resource"),
    ("no_resource unclear", answer(raw_spec(no_resource="maybe")), "no_resource"),
    ("max_num negative", answer(raw_spec(max_num=-1)), "max_num"),
    ("max_num a list", answer(raw_spec(max_num=[4])), "max_num"),
    ("gpu_num missing", answer(raw_spec(gpu_num=None)), "gpu_num"),
    ("gpu_type a number", answer(raw_spec(gpu_type=7)), "gpu_type"),
    ("conflicting duplicates", answer(raw_spec(max_num=1), raw_spec(max_num=2)), "listed twice"),
    (
        "gateway error under 200",
        json.dumps({"error_code": "APIGW.0308", "error_msg": "throttled"}).encode(),
        "APIGW.0308",
    ),
]


@pytest.mark.parametrize(("body", "reason"), [f[1:] for f in FAILURES], ids=[f[0] for f in FAILURES])
def test_a_doubtful_answer_is_a_failed_poll_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(PollError) as info:
        parse(body)
    assert reason in str(info.value)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"is_success": False, "error_code": "ModelArts.0104", "error_message": "m"}, ("ModelArts.0104", "m", None)),
        ({"error_code": "ModelArts.0104", "error_msg": "m"}, ("ModelArts.0104", "m", None)),
        ({"error_code": "APIGW.0301", "error_msg": "m", "request_id": "r1"}, ("APIGW.0301", "m", "r1")),
        ({"errorCode": "X.1", "errorMsg": "m"}, ("X.1", "m", None)),
        ({"error": {"code": 401, "message": "m", "title": "Unauthorized"}}, ("401", "m", None)),
        ({"code": "IAM.0001", "message": "m"}, ("IAM.0001", "m", None)),
        ({"specs": []}, (None, None, None)),
        ("text", (None, None, None)),
    ],
)
def test_error_fields_from_every_body_shape(body: Any, expected: tuple[Any, ...]) -> None:
    assert error_fields(body) == expected


# -- property tests: whatever arrives, a snapshot or a PollError, never anything else -------
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**20),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(["true", "false", "1", "0", "8", " 4 ", "-1"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6,
)
spec_objects = st.fixed_dictionaries(
    {},
    optional={
        "spec_id": values,
        "core": values,
        "cpu": values,
        "gpu_num": values,
        "gpu_type": values,
        "spec_code": st.one_of(values, st.sampled_from(["a", "b", "模型.gpu", "a"])),
        "max_num": values,
        "storage": values,
        "interface_type": values,
        "no_resource": values,
        "unit_num": values,
        "extra": values,
    },
)
answers = st.fixed_dictionaries(
    {},
    optional={
        "is_success": st.one_of(st.booleans(), values),
        "spec_total_count": st.one_of(st.integers(0, 6), values),
        "specs": st.one_of(st.lists(st.one_of(spec_objects, values), max_size=6), values),
        "error_code": values,
        "error_message": values,
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answers)
def test_any_answer_gives_a_snapshot_or_a_failed_poll(data: dict[str, Any]) -> None:
    body = json.dumps(data, ensure_ascii=False).encode()
    try:
        snap = parse(body)
    except PollError as exc:
        assert exc.reason
        return
    assert isinstance(snap, Snapshot)
    keys = [s.key for s in snap.specs]
    assert len(keys) == len(set(keys))
    for s in snap.specs:
        assert isinstance(s.no_resource, bool) and s.max_num >= 0 and s.gpu_num >= 0
        assert isinstance(s.gpu_type, str) and s.spec_code


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_give_a_snapshot_or_a_failed_poll(body: bytes) -> None:
    try:
        assert isinstance(parse(body), Snapshot)
    except PollError as exc:
        assert exc.reason
