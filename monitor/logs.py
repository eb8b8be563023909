"""Logging to stderr: readable text, JSON lines, or journald's own form.

Under journald (``$JOURNAL_STREAM`` names the device and inode of stderr) a
line carries no timestamp (the journal adds one) and starts with a syslog
priority prefix such as ``<4>`` so ``journalctl -p warning`` works. Every
record passes through the redacting filter, whatever logger it comes from.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any, TextIO

from .redact import RedactingFilter, redact

_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}
_FIELDS = ("watch", "query", "event_id", "kind", "notifier", "url", "code", "request_id")


def under_journald(stream: TextIO | None = None) -> bool:
    """True when stderr is connected to the journal (systemd sets JOURNAL_STREAM)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    if not value:
        return False
    try:
        dev, inode = (int(x) for x in value.split(":", 1))
        st = os.fstat((stream or sys.stderr).fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return st.st_dev == dev and st.st_ino == inode


class TextFormatter(logging.Formatter):
    def __init__(self, journald: bool):
        super().__init__()
        self.journald = journald

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_text:
            message += "\n" + record.exc_text
        level = record.levelname.lower()
        if self.journald:
            prio = _PRIORITY.get(record.levelno, 6)
            return "\n".join(f"<{prio}>{line}" for line in message.splitlines() or [""])
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        return f"{stamp} {level:<7} {message}"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                data[name] = redact(str(value))
        if record.exc_text:
            data["exception"] = record.exc_text
        return json.dumps(data, ensure_ascii=False)


def setup_logging(log_format: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    out = stream or sys.stderr
    journald = under_journald(out)
    handler = logging.StreamHandler(out)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter(journald=journald and log_format == "auto"))
    handler.addFilter(RedactingFilter())
    threshold = getattr(logging, level.upper(), logging.INFO)
    handler.setLevel(threshold)
    # Libraries that log per request (or per send) below WARNING: noise, except when debugging.
    handler.addFilter(_LibraryFloor(logging.DEBUG if level == "debug" else logging.WARNING))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(threshold)
    for name in _LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING if level != "debug" else logging.DEBUG)


_LIBRARIES = ("httpx", "httpcore", "apprise", "hpack", "asyncio", "hypercorn")


class _LibraryFloor(logging.Filter):
    """Drop library records below ``floor`` (apprise is made to log DEBUG while it sends, for
    the failure reasons; those lines are for us, not the log)."""

    def __init__(self, floor: int):
        super().__init__()
        self.floor = floor

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.floor or record.name.split(".")[0] not in _LIBRARIES
