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
from urllib.parse import parse_qsl, unquote, urlsplit

MASK = "***"
_MIN_LEN = 4  # shorter values would mask ordinary words

_PLAIN_USER = ("mailto", "mailtos")
_PLAIN_PATH = ("mailto", "mailtos", "json", "jsons", "form", "forms", "xml", "xmls")
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


def url_secrets(url: str) -> list[str]:
    """The secret parts of an apprise URL: credentials, tokens in the path, query values."""
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
    # Slack, Discord, Teams, Telegram... keep their tokens in the path and host.
    if parts.scheme not in _PLAIN_PATH:
        if parts.hostname and "." not in parts.hostname and len(parts.hostname) >= 8:
            found.append(parts.hostname)
        for segment in parts.path.split("/"):
            if len(segment) >= 8 and not segment.startswith("#"):
                found.append(unquote(segment))
    for key, value in parse_qsl(parts.query, keep_blank_values=False):
        if key.lower() in _PLAIN_QUERY:
            continue
        if len(value) >= 6:
            found.append(value)
    return found


def register_url(url: str) -> None:
    for secret in url_secrets(url):
        register(secret)


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
            # Longest first, so a secret that contains another is masked whole.
            ordered = sorted(_secrets, key=len, reverse=True)
            pattern = _pattern = re.compile("|".join(re.escape(s) for s in ordered))
    return pattern.sub(MASK, text)


def mask_url(url: str) -> str:
    """A URL fit to show: scheme, host and plain paths kept, credentials and tokens masked."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return MASK
    host = parts.hostname or ""
    if parts.scheme not in _PLAIN_PATH and host and "." not in host and len(host) >= 8:
        host = MASK  # a token in the host position (discord://webhook_id/...)
    if port:
        host = f"{host}:{port}"
    user = ""
    if parts.username and parts.scheme in _PLAIN_USER:
        user = f"{parts.username}:{MASK}@" if parts.password else f"{parts.username}@"
    elif parts.username:
        user = f"{MASK}@"
    path = parts.path
    if parts.scheme not in _PLAIN_PATH:
        path = "/".join(MASK if len(seg) >= 8 and not seg.startswith("#") else seg for seg in path.split("/"))
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
