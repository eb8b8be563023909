"""The error taxonomy: every code of REFERENCE.md section 4, classified, in plain words."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.api.errors import RULES, classify

ROOT = Path(__file__).resolve().parent.parent

# (code, HTTP status, server message, class, words the reason must contain)
TABLE = [
    *[
        (f"ModelArts.{n}", 400, "bad", "permanent", "check job_type, engine_id and project_type")
        for n in ("0101", "0104", "0107", "1120", "2764", "2788")
    ],
    ("ModelArts.0210", 400, "Invalid project ID", "permanent", "invalid project ID"),
    ("ModelArts.2786", 404, "TokenProjectIDNotMatch", "permanent", "invalid project ID"),
    *[
        (f"ModelArts.{n}", 401, "token", "refresh", "token")
        for n in ("0201", "0202", "0203", "0204", "4127", "5001", "5002")
    ],
    *[(f"ModelArts.{n}", 401, "region", "refresh", "this region's project") for n in ("0207", "0212")],
    *[
        (f"ModelArts.{n}", 401, "auth", "credentials", "check the access key and secret key")
        for n in ("0205", "0206", "0208", "3801")
    ],
    ("ModelArts.0206", 403, "Invalid AK/SK", "credentials", "check the access key and secret key"),
    *[(f"ModelArts.{n}", 403, "denied", "permanent", "permission denied by policy") for n in ("0108", "0112")],
    ("ModelArts.4116", 403, "arrears", "account", "arrears"),
    *[(f"ModelArts.{n}", 403, "suspended", "account", "suspended") for n in ("4118", "6201", "5017")],
    ("ModelArts.6203", 403, "restricted", "account", "restricted"),
    ("ModelArts.2837", 403, "FrozenAccount", "account", "frozen"),
    *[(f"ModelArts.{n}", 400, "flavor", "permanent", "check engine_id") for n in ("2780", "2781", "2840")],
    *[(f"ModelArts.{n}", 408, "timeout", "transient", "timed out") for n in ("4205", "6100")],
    *[(f"ModelArts.{n}", 429, "busy", "transient", "throttled") for n in ("2799", "4206")],
    *[
        (f"ModelArts.{n}", 500, "internal", "transient", "internal error")
        for n in ("0010", "5000", "5003", "5039", "6102", "6691", "6692", "6699", *map(str, range(2950, 2960)))
    ],
    ("ModelArts.6200", 500, "No resources available", "transient", "no resources"),
    *[(f"ModelArts.{n}", 503, "gateway", "transient", "gateway is unavailable") for n in ("4700", "4302", "4503")],
    ("APIGW.0101", 404, "The API does not exist", "permanent", "check the endpoint"),
    ("APIGW.0201", 400, "Request error", "permanent", "malformed"),
    ("APIGW.0202", 502, "Backend unavailable", "transient", "backend is unavailable"),
    ("APIGW.0203", 504, "Backend timeout", "transient", "backend timed out"),
    (
        "APIGW.0301",
        401,
        "Incorrect IAM authentication information: verify aksk signature fail",
        "credentials",
        "signature does not match; check the secret key",
    ),
    (
        "APIGW.0301",
        401,
        "calc aksk signature fail:signature expired, signature time:20240115T083000Z, server time:20240115T090000Z",
        "clock",
        "clock differs",
    ),
    (
        "APIGW.0301",
        401,
        "Incorrect IAM authentication information: ak XYZ not exist",
        "credentials",
        "access key does not exist",
    ),
    ("APIGW.0301", 401, "Get secretKey failed", "credentials", "access key does not exist"),
    ("APIGW.0301", 401, "AK access failed to reach the limit,forbidden.", "credentials", "locked for 5 minutes"),
    ("APIGW.0301", 401, "Incorrect IAM authentication information: decrypt token fail", "refresh", "token"),
    ("APIG.0301", 401, "verify aksk signature fail", "credentials", "check the secret key"),  # OTC prefix
    *[(f"APIGW.{n}", 403, "Forbidden", "permanent", "not authorized") for n in ("0302", "0306")],
    ("APIGW.0307", 401, "The token must be updated", "refresh", "must be updated"),
    ("APIG.0307", 401, "The token must be updated", "refresh", "must be updated"),
    (
        "APIGW.0308",
        429,
        "The throttling threshold has been reached: policy user over ratelimit,limit:200",
        "transient",
        "throttled",
    ),
    ("APIG.0308", 429, "policy ip over ratelimit,limit:5,time:1 minute", "transient", "throttled"),
    ("APIGW.0310", 403, "project unavailable", "permanent", "project is unavailable"),
    ("APIGW.0613", 503, "IAM unavailable", "transient", "IAM is unavailable"),
    ("APIGW.0601", 500, "Internal error", "transient", "internal error"),
    *[(f"IAM.{n}", 401, "wrong", "credentials", "user name and password") for n in ("0001", "0062")],
    ("IAM.0061", 401, "locked", "credentials", "locked"),
    *[(f"IAM.{n}", 401, "expired", "refresh", "expired") for n in ("0066", "0067")],
    *[(f"IAM.{n}", 403, "denied", "permanent", "denied") for n in ("0002", "0003")],
    *[(f"IAM.{n}", 403, "disabled", "account", "disabled") for n in ("0080", "0082")],
    ("IAM.0081", 403, "console only", "permanent", "programmatic access"),
    ("IAM.0012", 429, "too many", "transient", "throttled"),
    ("IAM.0006", 500, "internal", "transient", "internal error"),
    # unknown codes fall back to the HTTP status
    ("ModelArts.9999", 401, "?", "credentials", "HTTP 401"),
    ("Foo.1", 403, "?", "permanent", "HTTP 403"),
    (None, 404, None, "permanent", "HTTP 404"),
    (None, 429, None, "transient", "HTTP 429"),
    (None, 503, None, "transient", "HTTP 503"),
    (None, 400, None, "permanent", "HTTP 400"),
]


@pytest.mark.parametrize(
    ("code", "status", "message", "category", "words"),
    TABLE,
    ids=[f"{row[0]}-{row[1]}-{i}" for i, row in enumerate(TABLE)],
)
def test_each_code_is_classified_in_plain_words(
    code: str | None, status: int, message: str | None, category: str, words: str
) -> None:
    error = classify(code, message, status=status, request_id="req-123")
    assert error.category == category
    assert words.lower() in error.reason.lower()
    text = error.describe()
    if code:
        assert code in text
    assert "[request id req-123]" in text


def test_every_rule_is_in_the_table() -> None:
    tested = {
        row[0].split(".")[1]
        for row in TABLE
        if row[0] and row[0].split(".")[0] in ("ModelArts", "APIGW", "APIG", "IAM")
    }
    for rule in RULES:
        for number in rule.numbers:
            assert number in tested, f"{rule.family}.{number}"


def test_every_code_is_in_the_readme_troubleshooting() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Troubleshooting", 1)[1]
    for rule in RULES:
        for number in rule.numbers:
            if rule.family == "ModelArts" and number.startswith("295"):
                number = "2950"  # the 2950-2959 range is one line
            assert number in section, f"{rule.family}.{number} is not in the README's troubleshooting"


def test_server_messages_are_redacted_and_shortened() -> None:
    from monitor import redact

    redact.register("AKSECRETVALUE123")
    error = classify("APIGW.0301", "ak AKSECRETVALUE123 not exist " + "x" * 500, status=401)
    assert "AKSECRETVALUE123" not in error.reason and len(error.reason) < 400
