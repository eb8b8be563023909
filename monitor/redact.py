"""Keep secrets out of logs, error messages, JSON output and the status page.

Every secret the configuration resolves (keys, passwords, tokens, the secret
parts of apprise URLs) is registered here; :func:`redact` replaces each with
``***``. A logging filter applies it to every record, so a library that logs a
URL at DEBUG cannot leak it either.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

MASK = "***"
_MIN_LEN = 4  # shorter values would mask ordinary words

_PLAIN_USER = ("mailto", "mailtos")
_PLAIN_QUERY = {"to", "from", "cc", "bcc", "name", "format", "mode", "method", "cto", "rto", "smtp", "user", "overflow"}

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None


def register(value: str | None) -> None:
    """Remember ``value`` (and its URL-encoded form) as a secret."""
    if not value or len(value) < _MIN_LEN:
        return
    global _pattern
    with _lock:
        from urllib.parse import quote

        before = len(_secrets)
        _secrets.add(value)
        _secrets.add(quote(value, safe=""))
        if len(_secrets) != before:
            _pattern = None


def _host(netloc: str) -> str:
    """The host as written (urlsplit lower-cases it, and tokens are case-sensitive)."""
    host = netloc.rpartition("@")[2]
    if host.startswith("["):
        return host.partition("]")[0] + "]"
    return host.partition(":")[0]


def _token_host(host: str) -> bool:
    """A "host" that is no host name (no dot, not localhost, not an address) is a token."""
    if not host or host.startswith("[") or host.lower() == "localhost":
        return False
    return "." not in host or looks_secret(host)


def looks_secret(part: str) -> bool:
    """A URL path or host part that reads like a token rather than a word ("alerts", "services")."""
    if len(part) < 8 or part.startswith("#") or "." in part:
        return False
    return any(c.isdigit() for c in part) or (part.lower() != part and part.upper() != part) or len(part) >= 20


def url_secrets(url: str) -> list[str]:
    """The secret parts of an apprise URL: credentials, tokens in the host or path, query values."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    found: list[str] = []
    if parts.password:
        found += [parts.password, unquote(parts.password)]
    if parts.username and parts.password is None and parts.scheme not in _PLAIN_USER:
        # slack://TokenA@..., tgram://bottoken@...: a bare user part is a credential
        found.append(unquote(parts.username))
    # Slack, Discord, Teams, Telegram and webhook URLs keep their tokens in the host or path.
    host = _host(parts.netloc)
    if _token_host(host):
        found.append(host)
    hostport = parts.netloc.rpartition("@")[2]
    if ":" in hostport and not hostport.startswith("["):
        after = hostport.partition(":")[2]
        if after and not after.isdigit():
            found.append(after)  # tgram://123456:TOKEN/...: not a port but the token's second half
    for segment in parts.path.split("/"):
        if looks_secret(unquote(segment)):
            found.append(unquote(segment))
    for key, value in parse_qsl(parts.query, keep_blank_values=False):
        if key.lower() in _PLAIN_QUERY:
            continue
        if len(value) >= 6:
            found.append(value)
    return found


def registered() -> frozenset[str]:
    with _lock:
        return frozenset(_secrets)


def clear() -> None:
    """Forget every secret (tests)."""
    global _pattern
    with _lock:
        _secrets.clear()
        _pattern = None


def redact(text: str) -> str:
    global _pattern
    pattern = _pattern
    if pattern is None:
        with _lock:
            if not _secrets:
                return text
            # Longest first, so a secret that contains another is masked whole; never inside a
            # longer word or number (a 4-digit password must not garble a timestamp).
            ordered = sorted(_secrets, key=len, reverse=True)
            alternatives = "|".join(re.escape(s) for s in ordered)
            pattern = _pattern = re.compile(rf"(?<![A-Za-z0-9])(?:{alternatives})(?![A-Za-z0-9])")
    return pattern.sub(MASK, text)


def redact_data(data: Any) -> Any:
    """Redact every string in a JSON-like value (not its text: that could break the JSON)."""
    if isinstance(data, str):
        return redact(data)
    if isinstance(data, dict):
        return {redact_data(k): redact_data(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [redact_data(v) for v in data]
    return data


def mask_url(url: str) -> str:
    """A URL fit to show: scheme, host and plain path words kept, credentials and tokens masked."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return MASK
    host = _host(parts.netloc)
    if _token_host(host):
        host = MASK  # a token in the host position (slack://TokenA/..., discord://webhook_id/...)
    if port:
        host = f"{host}:{port}"
    user = ""
    if parts.username and parts.scheme in _PLAIN_USER:
        user = f"{parts.username}:{MASK}@" if parts.password else f"{parts.username}@"
    elif parts.username:
        user = f"{MASK}@"
    path = "/".join(MASK if looks_secret(unquote(seg)) else seg for seg in parts.path.split("/"))
    return f"{parts.scheme}://{user}{redact(host)}{redact(path)}"


class RedactingFilter(logging.Filter):
    """Rewrite each record's message (and exception text) with secrets masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            message = str(record.msg)
        clean = redact(message)
        if clean != message or record.args:
            record.msg = clean
            record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True
