"""Every upstream error code, classified, with a reason in plain words.

Classes (REFERENCE.md section 4):

- ``transient``: throttling, timeouts, internal and gateway errors. Back off
  exponentially with jitter and try again.
- ``refresh``: the token must be renewed; renew once and retry, then it is
  permanent. ``clock`` is its sibling for a signature that expired because
  the clocks disagree: measure the skew, re-sign with the corrected time, retry.
- ``permanent``: bad parameter, project, endpoint or permission. Retrying
  will not help until the configuration changes; poll again only rarely.
- ``credentials``: a permanent class of its own, because the gateway locks an
  access key for 5 minutes after 5 failed signatures in a row: never retried
  quickly (at least 5 minutes apart).
- ``account``: the cloud account is in arrears, suspended, frozen or
  restricted; someone must act on the account.

Matching is on the numeric suffix, since Huawei Cloud says ``APIGW.`` where
Open Telekom Cloud and older endpoints say ``APIG.``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import PollError
from ..redact import redact

TRANSIENT = "transient"
REFRESH = "refresh"
CLOCK = "clock"
PERMANENT = "permanent"
CREDENTIALS = "credentials"
ACCOUNT = "account"


@dataclass(frozen=True)
class Rule:
    family: str  # "ModelArts", "APIGW" or "IAM"
    numbers: tuple[str, ...]
    category: str
    reason: str


_R = Rule
RULES: tuple[Rule, ...] = (
    # ModelArts (error_codes.rst; modelarts_03_0095)
    _R(
        "ModelArts",
        ("0101", "0104", "0107", "1120", "2764", "2788"),
        PERMANENT,
        "the API rejected a request parameter: check job_type, engine_id and project_type of the watch",
    ),
    _R(
        "ModelArts",
        ("0210", "2786"),
        PERMANENT,
        "invalid project ID for this region: check project_id, or leave it out to look it up",
    ),
    _R(
        "ModelArts",
        ("0201", "0202", "0203", "0204", "4127", "5001", "5002"),
        REFRESH,
        "the token was rejected (missing, expired or invalid): renewing it",
    ),
    _R(
        "ModelArts",
        ("0207", "0212"),
        REFRESH,
        "the token is not valid for this region's project: check the project and region",
    ),
    _R(
        "ModelArts",
        ("0205", "0206", "0208", "3801"),
        CREDENTIALS,
        "authentication rejected: the access key or signature is missing or invalid; "
        "check the access key and secret key",
    ),
    _R(
        "ModelArts",
        ("0108", "0112"),
        PERMANENT,
        "permission denied by policy: give the user read access to ModelArts in this region",
    ),
    _R("ModelArts", ("4116",), ACCOUNT, "the account is in arrears: top it up in the billing center"),
    _R("ModelArts", ("4118", "6201", "5017"), ACCOUNT, "the account is suspended: check it in the console"),
    _R("ModelArts", ("6203",), ACCOUNT, "the account is restricted: check it in the console"),
    _R("ModelArts", ("2837",), ACCOUNT, "the account is frozen: check it in the console"),
    _R("ModelArts", ("2780", "2781", "2840"), PERMANENT, "unknown engine or flavor: check engine_id of the watch"),
    _R("ModelArts", ("4205", "6100"), TRANSIENT, "ModelArts timed out"),
    _R("ModelArts", ("2799", "4206"), TRANSIENT, "throttled by ModelArts (too many requests)"),
    _R(
        "ModelArts",
        ("0010", "5000", "5003", "5039", "6102", "6691", "6692", "6699", *(str(n) for n in range(2950, 2960))),
        TRANSIENT,
        "ModelArts internal error",
    ),
    _R("ModelArts", ("6200",), TRANSIENT, "ModelArts has no resources available"),
    _R("ModelArts", ("4700", "4302", "4503"), TRANSIENT, "the ModelArts gateway is unavailable"),
    # API gateway (api-gateway error_codes.rst; devg-apisign/api-sign-errorcode.html)
    _R(
        "APIGW", ("0101",), PERMANENT, "API not found: check the endpoint for this region (the API may not exist there)"
    ),
    _R("APIGW", ("0201",), PERMANENT, "the gateway rejected the request as malformed"),
    _R("APIGW", ("0202",), TRANSIENT, "the ModelArts backend is unavailable"),
    _R("APIGW", ("0203",), TRANSIENT, "the ModelArts backend timed out"),
    _R("APIGW", ("0301",), CREDENTIALS, "authentication rejected: check the access key and secret key"),
    _R("APIGW", ("0302", "0306"), PERMANENT, "not authorized: give the user read access to ModelArts in this region"),
    _R("APIGW", ("0307",), REFRESH, "the token must be updated: renewing it"),
    _R("APIGW", ("0308",), TRANSIENT, "throttled by the API gateway (rate limit reached)"),
    _R("APIGW", ("0310",), PERMANENT, "the project is unavailable: check the project and region"),
    _R("APIGW", ("0613",), TRANSIENT, "IAM is unavailable"),
    _R("APIGW", ("0601",), TRANSIENT, "API gateway internal error"),
    # IAM (identity-access-management error_codes.rst)
    _R("IAM", ("0001", "0062"), CREDENTIALS, "IAM rejected the credentials: check the user name and password"),
    _R("IAM", ("0061",), CREDENTIALS, "the IAM user is locked after failed logins: wait, then check the password"),
    _R("IAM", ("0066", "0067"), REFRESH, "the token has expired: renewing it"),
    _R("IAM", ("0002", "0003"), PERMANENT, "IAM denied the request: check the user's permissions"),
    _R("IAM", ("0080", "0082"), ACCOUNT, "the IAM user is disabled: enable it in the console"),
    _R("IAM", ("0081",), PERMANENT, "the IAM user has console access only: enable programmatic access for it"),
    _R("IAM", ("0012",), TRANSIENT, "throttled by IAM (too many requests)"),
    _R("IAM", ("0006",), TRANSIENT, "IAM internal error"),
)

_INDEX: dict[tuple[str, str], Rule] = {(rule.family, number): rule for rule in RULES for number in rule.numbers}
_CODE = re.compile(r"^\s*([A-Za-z]+)\.(\d+)\s*$")
_FAMILIES = {"modelarts": "ModelArts", "apigw": "APIGW", "apig": "APIGW", "iam": "IAM"}


def find_rule(code: str | None) -> Rule | None:
    if not code:
        return None
    m = _CODE.match(code)
    if not m:
        return None
    family = _FAMILIES.get(m[1].lower())
    if family is None:
        return None
    return _INDEX.get((family, m[2].zfill(4)))


def _by_status(status: int | None) -> tuple[str, str]:
    if status is None:
        return TRANSIENT, "the API reported an error"
    if status == 401:
        return CREDENTIALS, "authentication rejected (HTTP 401): check the credentials"
    if status == 403:
        return PERMANENT, "access denied (HTTP 403): check the user's permissions"
    if status == 404:
        return PERMANENT, "not found (HTTP 404): check the endpoint and project ID"
    if status == 429:
        return TRANSIENT, "throttled (HTTP 429)"
    if status in (408, 425) or status >= 500:
        return TRANSIENT, f"the API is having trouble (HTTP {status})"
    if 400 <= status < 500:
        return PERMANENT, f"the API rejected the request (HTTP {status})"
    return TRANSIENT, f"unexpected answer (HTTP {status})"


def classify(
    code: str | None,
    message: str | None,
    *,
    status: int | None = None,
    request_id: str | None = None,
    retry_after: float | None = None,
    default: str | None = None,
) -> PollError:
    """A PollError for an error answer: category and plain-words reason."""
    rule = find_rule(code)
    if rule is not None:
        category, reason = rule.category, rule.reason
    else:
        category, reason = _by_status(status)
        if status is None and default:
            reason = default
    lowered = (message or "").lower()
    if rule is not None and rule.family == "APIGW" and rule.numbers == ("0301",):
        if "signature expired" in lowered:
            category = CLOCK
            reason = "signature expired: this machine's clock differs from the server's by more than 15 minutes"
        elif "decrypt token fail" in lowered:
            category = REFRESH
            reason = "the token could not be read by the gateway: renewing it"
        elif "reach the limit" in lowered or "forbidden" in lowered:
            reason = "the access key is locked for 5 minutes after repeated failed signatures: check the secret key"
        elif "not exist" in lowered or "secretkey" in lowered.replace(" ", ""):
            reason = "the access key does not exist: check access_key"
        elif "signature" in lowered:
            reason = "authentication rejected: the signature does not match; check the secret key"
    detail = ""
    if code or message:
        shown = redact((message or "").strip().replace("\n", " "))
        if len(shown) > 160:
            shown = shown[:157] + "..."
        detail = f" ({code}: {shown})" if code and shown else f" ({code or shown})"
    return PollError(
        f"{reason}{detail}",
        category=category,
        code=code,
        request_id=request_id,
        retry_after=retry_after,
        status=status,
    )
