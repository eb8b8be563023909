"""The exception tree of modelarts-monitor.

Shell modules translate foreign errors (httpx, sqlite3, apprise, OSError) into
these at their boundary, so the command line and the daemon only ever deal with
the classes below::

    MonitorError                    base; str() is a message fit for a user
    ├── UsageError                  bad command line                 exit 64
    ├── ConfigError                 bad configuration (.problems)    exit 78
    ├── StateError                  state database unusable          exit 1
    ├── PollError                   one failed poll of one query
    │                               .reason .code .request_id .category .retry_after
    └── DeliveryError               one apprise URL did not take a message
"""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 64
EXIT_CONFIG = 78


class MonitorError(Exception):
    """Base class; the message is written for the person running the monitor."""

    exit_status = EXIT_FAILURE


class UsageError(MonitorError):
    exit_status = EXIT_USAGE


@dataclass(frozen=True)
class Problem:
    """One configuration problem, located by file and key path."""

    file: str
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.path}" if self.path else self.file
        return f"{where}: {self.message}"


class ConfigError(MonitorError):
    exit_status = EXIT_CONFIG

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class StateError(MonitorError):
    """The state database cannot be opened or written (disk full, read-only, corrupt)."""


class PollError(MonitorError):
    """A failed poll: never produces spec events, never replaces the stored snapshot.

    ``category`` is one of the classes in :mod:`monitor.api.errors`:
    ``transient``, ``refresh``, ``permanent``, ``credentials`` or ``account``.
    """

    def __init__(
        self,
        reason: str,
        *,
        category: str = "transient",
        code: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
        status: int | None = None,
    ):
        from .redact import redact

        # An upstream may echo anything (a key in an error page, a token in a header): every
        # PollError is redacted when made, so no message, event or output can carry a secret.
        self.reason = redact(reason)
        self.category = category
        self.code = code
        self.request_id = redact(request_id) if request_id else request_id
        self.retry_after = retry_after
        self.status = status
        super().__init__(reason)

    def __str__(self) -> str:
        return self.describe()

    def describe(self) -> str:
        text = self.reason
        if self.request_id:
            text += f" [request id {self.request_id}]"
        return text


class DeliveryError(MonitorError):
    """One apprise URL failed to take a message; ``permanent`` ones are not retried."""

    def __init__(self, reason: str, *, permanent: bool = False):
        self.reason = reason
        self.permanent = permanent
        super().__init__(reason)
