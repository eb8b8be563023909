"""The TOML configuration: parsed once into typed values, every problem located.

A bad file never half-starts the monitor: :func:`load_config` collects every
problem with its file and key path (``watch[1].gpu_types``) and raises one
:class:`~monitor.errors.ConfigError` holding them all. Unknown keys are errors,
because a typo must not silently disable a filter.

List indexes in key paths count from 0, as TOML and JSON tools do:
``watch[0]`` is the first ``[[watch]]`` table in the file.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import hashlib
import json
import os
import re
import stat
import sys
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import redact
from .durations import format_duration, parse_duration
from .errors import ConfigError, Problem
from .model import SPEC_EVENT_KINDS, Query

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

DEFAULT_CONFIG_PATH = "/etc/modelarts-monitor/config.toml"
DEFAULT_ENDPOINT = "https://modelarts.{region}.myhuaweicloud.com"
DEFAULT_IAM_ENDPOINT = "https://iam.{region}.myhuaweicloud.com"
# The one region whose ModelArts endpoint is not on .com (SDK modelarts_region.py).
_ENDPOINT_EXCEPTIONS = {"ap-southeast-1": "https://modelarts.ap-southeast-1.myhuaweicloud.cn"}
MIN_INTERVAL = 5.0
DAY = 86400.0
MAX_FILE = 1024 * 1024  # a configuration or secret file larger than this is surely a mistake
AUTH_MODES = ("aksk", "password", "token")
LOG_FORMATS = ("auto", "text", "json")
_REGION = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_QUIET = re.compile(r"^(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})$")


class Secret:
    """A secret value that never shows itself in repr() or str()."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str = "literal"):
        self._value = value
        self.source = source  # "literal", "env:NAME", "file:/path" or "cred:NAME"

    def reveal(self) -> str:
        return self._value

    def reread(self) -> Secret:
        """The same reference read again (a token file rewritten by another program)."""
        if self.source.startswith(("file:", "cred:")):
            value = _resolve_reference(self.source)
            redact.register(value)
            return Secret(value, self.source)
        return self

    def __repr__(self) -> str:
        return f"Secret({self.source if self.source != 'literal' else '***'})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class MonitorSettings:
    interval: float = 60.0
    jitter: float = 0.1  # fraction of the interval
    timeout: float = 15.0
    max_concurrency: int = 8
    state_dir: Path = field(default_factory=lambda: default_state_dir())
    failure_alert_after: int = 3
    retention: float = 30 * 86400.0
    http_listen: tuple[str, int] | None = None
    log_format: str = "auto"
    log_level: str = "info"
    heartbeat_url: Secret | None = None


@dataclass(frozen=True)
class Account:
    name: str
    auth: str
    access_key: Secret | None = None
    secret_key: Secret | None = None
    security_token: Secret | None = None
    domain: str | None = None
    username: str | None = None
    password: Secret | None = None
    token: Secret | None = None
    endpoint: str = DEFAULT_ENDPOINT
    iam_endpoint: str = DEFAULT_IAM_ENDPOINT
    ca_bundle: Path | None = None

    def endpoint_for(self, region: str) -> str:
        if self.endpoint == DEFAULT_ENDPOINT and region in _ENDPOINT_EXCEPTIONS:
            return _ENDPOINT_EXCEPTIONS[region]
        return self.endpoint.replace("{region}", region).rstrip("/")

    def iam_endpoint_for(self, region: str) -> str:
        return self.iam_endpoint.replace("{region}", region).rstrip("/")


@dataclass(frozen=True)
class Notifier:
    name: str
    urls: tuple[Secret, ...] = ()
    config: Path | None = None  # an apprise configuration file
    tag: str | None = None
    quiet_hours: tuple[int, int] | None = None  # minutes after local midnight: start, end


@dataclass(frozen=True)
class Watch:
    name: str
    account: str
    region: str
    project_id: str | None = None
    job_type: str | None = None
    engine_id: int = 0
    project_type: int = 0
    gpu_types: tuple[str, ...] = ()
    spec_codes: tuple[str, ...] = ()
    min_gpu_num: int = 1
    events: tuple[str, ...] = SPEC_EVENT_KINDS
    notify: tuple[str, ...] = ()
    interval: float | None = None
    confirm: int = 1
    remind_every: float | None = None

    @property
    def query(self) -> Query:
        return Query(
            account=self.account,
            region=self.region,
            project_id=self.project_id,
            job_type=self.job_type,
            engine_id=self.engine_id,
            project_type=self.project_type,
        )

    @functools.cached_property
    def gpu_type_set(self) -> frozenset[str]:
        return frozenset(g.lower() for g in self.gpu_types)

    @functools.cached_property
    def spec_code_patterns(self) -> tuple[re.Pattern[str], ...]:
        """The spec_codes globs, compiled once, matched case-insensitively."""
        return tuple(re.compile(fnmatch.translate(p.lower())) for p in self.spec_codes)

    @functools.cached_property
    def fingerprint_value(self) -> str:
        return self._fingerprint()

    def fingerprint(self) -> str:
        """Changes when what the watch selects changes (its detection state then restarts)."""
        return self.fingerprint_value

    def _fingerprint(self) -> str:
        data = [
            self.query.key,
            sorted(g.lower() for g in self.gpu_types),
            sorted(self.spec_codes),
            self.min_gpu_num,
        ]
        return hashlib.sha256(json.dumps(data).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Config:
    path: Path
    monitor: MonitorSettings
    accounts: dict[str, Account]
    notifiers: dict[str, Notifier]
    watches: tuple[Watch, ...]
    warnings: tuple[str, ...] = ()

    def watch(self, name: str) -> Watch:
        for w in self.watches:
            if w.name == name:
                return w
        raise KeyError(name)

    def interval_for(self, watch: Watch) -> float:
        return watch.interval if watch.interval is not None else self.monitor.interval

    def queries(self) -> dict[Query, list[Watch]]:
        """Each distinct query with the watches that share it, in file order."""
        result: dict[Query, list[Watch]] = {}
        for w in self.watches:
            result.setdefault(w.query, []).append(w)
        return result

    def query_interval(self, query: Query) -> float:
        return min(self.interval_for(w) for w in self.watches if w.query == query)

    def secrets(self) -> list[str]:
        """Every secret value the configuration holds (for redaction checks)."""
        values: list[str] = []
        for acc in self.accounts.values():
            for s in (acc.access_key, acc.secret_key, acc.security_token, acc.password, acc.token):
                if s is not None:
                    values.append(s.reveal())
        for n in self.notifiers.values():
            for u in n.urls:
                values.extend(redact.url_secrets(u.reveal()))
        if self.monitor.heartbeat_url is not None:
            values.extend(redact.url_secrets(self.monitor.heartbeat_url.reveal()))
        return values


def default_config_path() -> str:
    if os.environ.get("MODELARTS_MONITOR_CONFIG"):
        return os.environ["MODELARTS_MONITOR_CONFIG"]
    conf_dir = os.environ.get("CONFIGURATION_DIRECTORY")
    if conf_dir:
        return str(Path(conf_dir.split(":")[0]) / "config.toml")
    return DEFAULT_CONFIG_PATH


def default_state_dir() -> Path:
    state = os.environ.get("STATE_DIRECTORY")
    if state:
        return Path(state.split(":")[0])
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "state"
    return base / "modelarts-monitor"


UrlChecker = Callable[[str], "str | None"]
ConfigFileChecker = Callable[[str, "str | None"], "str | None"]


def load_config(
    path: str | os.PathLike[str],
    *,
    resolve_secrets: bool = True,
    url_checker: UrlChecker | None = None,
    config_checker: ConfigFileChecker | None = None,
) -> Config:
    """Read, validate and resolve the configuration file, or raise ConfigError.

    ``resolve_secrets=False`` leaves env:/file:/cred: references unread (for
    commands that only read the state database). ``url_checker`` judges each
    notifier URL (apprise does, in the shell) so every problem is reported at once.
    """
    file = Path(path)
    name = str(file)
    try:
        raw = read_small_file(file)
    except FileNotFoundError:
        raise ConfigError(
            [
                Problem(
                    name,
                    "",
                    "file not found; create it (config.example.toml in the modelarts-monitor source "
                    "documents every key) or pass --config PATH",
                )
            ]
        ) from None
    except PermissionError:
        raise ConfigError(
            [
                Problem(
                    name,
                    "",
                    f"cannot read: permission denied for this user (uid {os.getuid()}); the service's "
                    "dynamic user needs read access (mode 0644), so keep secrets in credentials (cred:)",
                )
            ]
        ) from None
    except OSError as exc:
        raise ConfigError([Problem(name, "", f"cannot read: {exc.strerror or exc}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([Problem(name, "", f"not UTF-8 text (byte {exc.start})")]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([Problem(name, "", f"not valid TOML: {exc}")]) from None
    except RecursionError:
        raise ConfigError([Problem(name, "", "not valid TOML: nested too deeply")]) from None
    try:
        mode = file.stat().st_mode
    except OSError:
        mode = 0
    return parse_config(
        data,
        name,
        readable_by_others=bool(mode & (stat.S_IRGRP | stat.S_IROTH)),
        resolve_secrets=resolve_secrets,
        url_checker=url_checker,
        config_checker=config_checker,
    )


def parse_config(
    data: dict[str, Any],
    file: str = "config.toml",
    *,
    readable_by_others: bool = False,
    resolve_secrets: bool = True,
    url_checker: UrlChecker | None = None,
    config_checker: ConfigFileChecker | None = None,
) -> Config:
    reader = _Reader(file, resolve_secrets=resolve_secrets, url_checker=url_checker, config_checker=config_checker)
    cfg = reader.config(data)
    if reader.problems:
        raise ConfigError(reader.problems)
    assert cfg is not None
    warnings = list(reader.warnings)
    if readable_by_others and reader.literal_secrets:
        warnings.append(
            f"{file}: holds literal secrets ({', '.join(reader.literal_secrets)}) but other "
            f"users can read it; move them to cred: (systemd credentials), file: or env: references, "
            f"or run 'chmod 600 {file}' if only this user runs the monitor"
        )
    config = Config(
        path=Path(file),
        monitor=cfg.monitor,
        accounts=cfg.accounts,
        notifiers=cfg.notifiers,
        watches=cfg.watches,
        warnings=tuple(warnings),
    )
    for value in config.secrets():
        redact.register(value)
    return config


def _resolve_reference(ref: str) -> str:
    """The value behind env:/file:/cred:; raises ValueError with a user message."""
    kind, _, rest = ref.partition(":")
    if kind == "env":
        if not rest:
            raise ValueError('env: needs a variable name, such as "env:HW_SECRET_KEY"')
        value = os.environ.get(rest)
        if value is None:
            raise ValueError(f"environment variable {rest} is not set")
        if not value:
            raise ValueError(f"environment variable {rest} is empty")
        return value
    if kind == "file":
        path = Path(rest).expanduser()
    else:  # cred
        cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
        if not cred_dir:
            raise ValueError(
                f"cred:{rest} needs systemd's $CREDENTIALS_DIRECTORY "
                "(LoadCredential= in the unit); it is not set. Outside systemd use env: or file:"
            )
        if not rest or "/" in rest:
            raise ValueError(f'cred:{rest}: expected a credential name such as "cred:hw_secret_key"')
        path = Path(cred_dir) / rest
    try:
        value = read_small_file(path).decode("utf-8").strip()
    except FileNotFoundError:
        raise ValueError(f"{path} does not exist") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text") from None
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not value:
        raise ValueError(f"{path} is empty")
    if "\n" in value:
        raise ValueError(f"{path} holds more than one line; a secret file holds the secret alone")
    return value


def read_small_file(path: Path) -> bytes:
    """A regular file's bytes; a FIFO, device or directory (which could block or never end) is refused."""
    import errno

    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise OSError(errno.EISDIR, "it is a directory, not a file")
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        if st.st_size > MAX_FILE:
            raise OSError(errno.EFBIG, f"larger than {MAX_FILE // 1024} KiB")
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


@dataclass
class _Parsed:
    monitor: MonitorSettings
    accounts: dict[str, Account]
    notifiers: dict[str, Notifier]
    watches: tuple[Watch, ...]


_MISSING = object()


class _Reader:
    """Walks the TOML document, converting values and collecting problems."""

    def __init__(
        self,
        file: str,
        *,
        resolve_secrets: bool = True,
        url_checker: UrlChecker | None = None,
        config_checker: ConfigFileChecker | None = None,
    ):
        self.file = file
        self.resolve_secrets = resolve_secrets
        self.url_checker = url_checker
        self.config_checker = config_checker
        self.problems: list[Problem] = []
        self.warnings: list[str] = []
        self.literal_secrets: list[str] = []

    # -- helpers -----------------------------------------------------------------
    def problem(self, path: str, message: str) -> None:
        self.problems.append(Problem(self.file, path, message))

    def check_keys(self, table: dict[str, Any], allowed: Iterable[str], path: str) -> None:
        allowed = list(allowed)
        for key in table:
            if key in allowed:
                continue
            hint = difflib.get_close_matches(key, allowed, n=1)
            suggestion = f'; did you mean "{hint[0]}"?' if hint else ""
            where = f"{path}.{key}" if path else key
            self.problem(where, f"unknown key{suggestion} (allowed: {', '.join(allowed)})")

    def table(self, value: Any, path: str) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.problem(path, f"expected a table, got {_describe(value)}")
            return None
        return value

    def string(
        self,
        table: dict[str, Any],
        key: str,
        path: str,
        *,
        default: Any = _MISSING,
        choices: Iterable[str] | None = None,
    ) -> Any:
        value = table.get(key, _MISSING)
        if value is _MISSING:
            if default is _MISSING:
                self.problem(f"{path}.{key}", "missing (required)")
                return None
            return default
        if not isinstance(value, str):
            self.problem(f"{path}.{key}", f"expected a string, got {_describe(value)}")
            return None
        if choices is not None:
            options = list(choices)
            if value not in options:
                self.problem(
                    f"{path}.{key}",
                    f"expected one of {', '.join(repr(c) for c in options)}, got {value!r}",
                )
                return None
        return value

    def integer(
        self,
        table: dict[str, Any],
        key: str,
        path: str,
        *,
        default: int,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int:
        value = table.get(key, _MISSING)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(f"{path}.{key}", f"expected an integer, got {_describe(value)}")
            return default
        if minimum is not None and value < minimum:
            self.problem(f"{path}.{key}", f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            self.problem(f"{path}.{key}", f"must be at most {maximum}, got {value}")
        return value

    def duration(
        self,
        table: dict[str, Any],
        key: str,
        path: str,
        *,
        default: Any,
        minimum: float | None = None,
        maximum: float | None = None,
    ) -> Any:
        value = table.get(key, _MISSING)
        if value is _MISSING:
            return default
        if not isinstance(value, str):
            self.problem(
                f"{path}.{key}",
                f'expected a duration string such as "60s" or "5m", got {_describe(value)}',
            )
            return default
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.problem(f"{path}.{key}", str(exc))
            return default
        if minimum is not None and seconds < minimum:
            self.problem(f"{path}.{key}", f"must be at least {minimum:g}s, got {value!r}")
            return default
        if maximum is not None and seconds > maximum:
            self.problem(f"{path}.{key}", f"must be at most {format_duration(maximum)}, got {value!r}")
            return default
        return seconds

    def string_list(
        self, table: dict[str, Any], key: str, path: str, *, default: tuple[str, ...] = ()
    ) -> tuple[str, ...]:
        value = table.get(key, _MISSING)
        if value is _MISSING:
            return default
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problem(f"{path}.{key}", f"expected a list of strings, got {_describe(value)}")
            return default
        return tuple(value)

    def secret(self, table: dict[str, Any], key: str, path: str, *, required: bool) -> Secret | None:
        value = table.get(key, _MISSING)
        where = f"{path}.{key}"
        if value is _MISSING:
            if required:
                self.problem(where, "missing (required)")
            return None
        if not isinstance(value, str) or not value:
            self.problem(
                where,
                f"expected a non-empty string (a value, or env:NAME, file:/path, cred:NAME), got {_describe(value)}",
            )
            return None
        return self.secret_value(value, where)

    def secret_value(self, value: str, where: str) -> Secret | None:
        kind, sep, _ = value.partition(":")
        if sep and kind in ("env", "file", "cred"):
            if not self.resolve_secrets:
                return Secret("", value)
            try:
                return Secret(_resolve_reference(value), value)
            except ValueError as exc:
                self.problem(where, str(exc))
                return None
        self.literal_secrets.append(where)
        return Secret(value, "literal")

    # -- sections ----------------------------------------------------------------
    def config(self, data: dict[str, Any]) -> _Parsed | None:
        self.check_keys(data, ["monitor", "accounts", "notifiers", "watch"], "")
        monitor = self.monitor(data.get("monitor", {}))
        accounts = self.accounts(data.get("accounts", _MISSING))
        notifiers = self.notifiers(data.get("notifiers", {}))
        watches = self.watches(data.get("watch", _MISSING), accounts, notifiers)
        if monitor is None:
            return None
        return _Parsed(monitor, accounts, notifiers, watches)

    def monitor(self, raw: Any) -> MonitorSettings | None:
        path = "monitor"
        table = self.table(raw, path)
        if table is None:
            return None
        self.check_keys(
            table,
            [
                "interval",
                "jitter",
                "timeout",
                "max_concurrency",
                "state_dir",
                "failure_alert_after",
                "retention",
                "http_listen",
                "log_format",
                "log_level",
                "heartbeat_url",
            ],
            path,
        )
        d = MonitorSettings()
        interval = self.duration(table, "interval", path, default=d.interval, minimum=MIN_INTERVAL, maximum=DAY)
        jitter = self.jitter(table.get("jitter", _MISSING), f"{path}.jitter", interval)
        timeout = self.duration(table, "timeout", path, default=d.timeout, minimum=1.0)
        if timeout > 300:
            self.problem(f"{path}.timeout", "must be at most 5m")
        max_concurrency = self.integer(table, "max_concurrency", path, default=8, minimum=1, maximum=256)
        state_dir_text = self.string(table, "state_dir", path, default="")
        state_dir = Path(state_dir_text).expanduser() if state_dir_text else default_state_dir()
        if "\0" in str(state_dir):
            self.problem(f"{path}.state_dir", "must not contain a NUL character")
        elif state_dir.exists() and not state_dir.is_dir():
            self.problem(f"{path}.state_dir", f"{state_dir} exists but is not a directory")
        failure_alert_after = self.integer(table, "failure_alert_after", path, default=3, minimum=1, maximum=1000)
        retention = self.duration(table, "retention", path, default=d.retention, minimum=3600.0, maximum=3650 * DAY)
        http_listen = self.listen(table.get("http_listen", ""), f"{path}.http_listen")
        log_format = self.string(table, "log_format", path, default="auto", choices=LOG_FORMATS)
        log_level = self.string(table, "log_level", path, default="info", choices=("debug", "info", "warning", "error"))
        heartbeat = None
        if "heartbeat_url" in table:
            heartbeat = self.secret(table, "heartbeat_url", path, required=False)
            if heartbeat is not None and heartbeat.reveal():
                problem = _check_http_url(heartbeat.reveal())
                if problem:
                    self.problem(f"{path}.heartbeat_url", problem)
                    heartbeat = None
        return MonitorSettings(
            interval=interval,
            jitter=jitter,
            timeout=timeout,
            max_concurrency=max_concurrency,
            state_dir=state_dir,
            failure_alert_after=failure_alert_after,
            retention=retention,
            http_listen=http_listen,
            log_format=log_format or "auto",
            log_level=log_level or "info",
            heartbeat_url=heartbeat,
        )

    def jitter(self, value: Any, where: str, interval: float) -> float:
        if value is _MISSING:
            return 0.1
        if not isinstance(value, str):
            self.problem(where, f'expected a percentage such as "10%" or a duration, got {_describe(value)}')
            return 0.1
        text = value.strip()
        if text.endswith("%"):
            try:
                fraction = float(text[:-1]) / 100
            except ValueError:
                self.problem(where, f'expected a percentage such as "10%", got {value!r}')
                return 0.1
        else:
            try:
                fraction = parse_duration(text) / interval
            except ValueError:
                self.problem(where, f'expected a percentage such as "10%" or a duration, got {value!r}')
                return 0.1
        if not 0 <= fraction <= 0.5:
            self.problem(where, f"must be between 0% and 50% of the interval, got {value!r}")
            return 0.1
        return fraction

    def listen(self, value: Any, where: str) -> tuple[str, int] | None:
        if value == "":
            return None
        if not isinstance(value, str):
            self.problem(where, f'expected "HOST:PORT" such as "127.0.0.1:9464", got {_describe(value)}')
            return None
        host, sep, port = value.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or "/" in host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
            self.problem(where, f'expected "HOST:PORT" such as "127.0.0.1:9464", got {value!r}')
            return None
        return host, int(port)

    def accounts(self, raw: Any) -> dict[str, Account]:
        if raw is _MISSING:
            self.problem("accounts", "missing: add an [accounts.NAME] table with your credentials")
            return {}
        table = self.table(raw, "accounts")
        if table is None:
            return {}
        if not table:
            self.problem("accounts", "no account defined: add an [accounts.NAME] table")
        result: dict[str, Account] = {}
        for name, body in table.items():
            acc = self.account(name, body)
            if acc is not None:
                result[name] = acc
        return result

    def account(self, name: str, raw: Any) -> Account | None:
        path = f"accounts.{name}"
        table = self.table(raw, path)
        if table is None:
            return None
        auth = self.string(table, "auth", path, default="aksk", choices=AUTH_MODES)
        common = ["auth", "endpoint", "iam_endpoint", "ca_bundle"]
        per_mode = {
            "aksk": ["access_key", "secret_key", "security_token"],
            "password": ["domain", "username", "password"],
            "token": ["token"],
        }
        self.check_keys(table, common + per_mode.get(auth or "aksk", []), path)
        endpoint = self.endpoint(table, "endpoint", path, DEFAULT_ENDPOINT)
        iam_endpoint = self.endpoint(table, "iam_endpoint", path, DEFAULT_IAM_ENDPOINT)
        ca = self.string(table, "ca_bundle", path, default=None)
        ca_bundle = None
        if ca:
            ca_bundle = Path(ca).expanduser()
            problem = _check_ca_bundle(ca_bundle)
            if problem:
                self.problem(f"{path}.ca_bundle", problem)
        if auth is None:
            return None
        fields: dict[str, Any] = {}
        if auth == "aksk":
            fields["access_key"] = self.secret(table, "access_key", path, required=True)
            fields["secret_key"] = self.secret(table, "secret_key", path, required=True)
            fields["security_token"] = self.secret(table, "security_token", path, required=False)
        elif auth == "password":
            fields["domain"] = self.string(table, "domain", path)
            fields["username"] = self.string(table, "username", path)
            fields["password"] = self.secret(table, "password", path, required=True)
        else:
            fields["token"] = self.secret(table, "token", path, required=True)
        return Account(
            name=name, auth=auth, endpoint=endpoint, iam_endpoint=iam_endpoint, ca_bundle=ca_bundle, **fields
        )

    def endpoint(self, table: dict[str, Any], key: str, path: str, default: str) -> str:
        value = self.string(table, key, path, default=default)
        if value is None:
            return default
        if not value.startswith(("https://", "http://")):
            self.problem(f"{path}.{key}", f'expected an https:// URL ("{{region}}" is filled in), got {value!r}')
            return default
        return str(value)

    def notifiers(self, raw: Any) -> dict[str, Notifier]:
        table = self.table(raw, "notifiers")
        if table is None:
            return {}
        result: dict[str, Notifier] = {}
        for name, body in table.items():
            notifier = self.notifier(name, body)
            if notifier is not None:
                result[name] = notifier
        return result

    def notifier(self, name: str, raw: Any) -> Notifier | None:
        path = f"notifiers.{name}"
        table = self.table(raw, path)
        if table is None:
            return None
        self.check_keys(table, ["urls", "config", "tag", "quiet_hours"], path)
        urls: list[Secret] = []
        raw_urls = table.get("urls", _MISSING)
        if raw_urls is not _MISSING:
            if not isinstance(raw_urls, list) or not all(isinstance(u, str) for u in raw_urls):
                self.problem(f"{path}.urls", f"expected a list of apprise URLs, got {_describe(raw_urls)}")
            else:
                for i, url in enumerate(raw_urls):
                    before = len(self.literal_secrets)
                    secret = self.secret_value(url, f"{path}.urls[{i}]")
                    if secret is None:
                        continue
                    if len(self.literal_secrets) > before and not redact.url_secrets(url):
                        self.literal_secrets.pop()  # json://127.0.0.1/hook holds nothing secret
                    if not secret.reveal():
                        urls.append(secret)  # an unread reference (resolve_secrets=False)
                        continue
                    problem = _check_url_shape(secret.reveal())
                    if problem is None and self.url_checker is not None:
                        problem = self.url_checker(secret.reveal())
                    if problem:
                        self.problem(f"{path}.urls[{i}]", problem)
                    else:
                        urls.append(secret)
        conf = self.string(table, "config", path, default=None)
        conf_path = None
        if conf:
            conf_path = Path(conf).expanduser()
            if not conf_path.is_file():
                self.problem(f"{path}.config", f"{conf_path} is not a readable file")
        tag = self.string(table, "tag", path, default=None)
        if tag is not None and conf_path is None:
            self.problem(f"{path}.tag", 'only applies together with "config"')
        if conf_path is not None and conf_path.is_file() and self.config_checker is not None:
            problem = self.config_checker(str(conf_path), tag)
            if problem:
                self.problem(f"{path}.config", problem)
        if raw_urls is _MISSING and conf is None:
            self.problem(path, 'needs "urls" (a list of apprise URLs) or "config" (an apprise file)')
        elif raw_urls is not _MISSING and not raw_urls and conf is None:
            self.problem(f"{path}.urls", "is empty: list at least one apprise URL")
        quiet = None
        raw_quiet = self.string(table, "quiet_hours", path, default=None)
        if raw_quiet is not None:
            m = _QUIET.match(raw_quiet.strip())
            if not m or int(m[1]) > 23 or int(m[3]) > 23 or int(m[2]) > 59 or int(m[4]) > 59:
                self.problem(f"{path}.quiet_hours", f'expected "HH:MM-HH:MM" such as "22:00-07:00", got {raw_quiet!r}')
            else:
                quiet = (int(m[1]) * 60 + int(m[2]), int(m[3]) * 60 + int(m[4]))
                if quiet[0] == quiet[1]:
                    self.problem(f"{path}.quiet_hours", "start and end are equal")
                    quiet = None
        return Notifier(name=name, urls=tuple(urls), config=conf_path, tag=tag, quiet_hours=quiet)

    def watches(self, raw: Any, accounts: dict[str, Account], notifiers: dict[str, Notifier]) -> tuple[Watch, ...]:
        if raw is _MISSING:
            self.problem("watch", "missing: add at least one [[watch]] table")
            return ()
        if not isinstance(raw, list):
            self.problem("watch", "expected [[watch]] tables (an array of tables)")
            return ()
        if not raw:
            self.problem("watch", "no [[watch]] defined")
        result: list[Watch] = []
        seen: set[str] = set()
        for i, body in enumerate(raw):
            name = body.get("name") if isinstance(body, dict) else None
            if isinstance(name, str):
                name = unicodedata.normalize("NFC", name)
            if isinstance(name, str) and name in seen:
                self.problem(f"watch[{i}].name", f"{name!r} is used by another watch; names must be unique")
            if isinstance(name, str):
                seen.add(name)
            watch = self.watch(i, body, accounts, notifiers)
            if watch is not None:
                result.append(watch)
        return tuple(result)

    def watch(self, index: int, raw: Any, accounts: dict[str, Account], notifiers: dict[str, Notifier]) -> Watch | None:
        path = f"watch[{index}]"
        table = self.table(raw, path)
        if table is None:
            return None
        before = len(self.problems)
        self.check_keys(
            table,
            [
                "name",
                "account",
                "region",
                "project_id",
                "job_type",
                "engine_id",
                "project_type",
                "gpu_types",
                "spec_codes",
                "min_gpu_num",
                "events",
                "notify",
                "interval",
                "confirm",
                "remind_every",
            ],
            path,
        )
        name = self.string(table, "name", path)
        if name is not None:
            name = unicodedata.normalize("NFC", name)  # "café" typed two ways is one name
        if name is not None and (not name.strip() or len(name) > 100 or not name.isprintable()):
            self.problem(f"{path}.name", "expected a short name without control characters")
        account = self.string(table, "account", path, default=None)
        if account is None and "account" not in table:
            if len(accounts) == 1:
                account = next(iter(accounts))
            elif accounts:
                self.problem(
                    f"{path}.account", f"missing: there are several accounts ({', '.join(accounts)}); say which one"
                )
        elif account is not None and account not in accounts:
            known = ", ".join(accounts) or "none defined"
            self.problem(f"{path}.account", f"no account named {account!r} (defined: {known})")
        region = self.string(table, "region", path)
        if region is not None and not _REGION.match(region):
            self.problem(f"{path}.region", f'expected a region name such as "cn-north-4", got {region!r}')
        project_id = self.string(table, "project_id", path, default=None)
        if project_id is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", project_id):
            self.problem(f"{path}.project_id", f"expected a project ID (letters and digits), got {project_id!r}")
        job_type = self.string(table, "job_type", path, default=None, choices=("train", "inference"))
        engine_id = self.integer(table, "engine_id", path, default=0, minimum=0, maximum=2**63 - 1)
        project_type = self.integer(table, "project_type", path, default=0, minimum=0, maximum=3)
        gpu_types = self.string_list(table, "gpu_types", path)
        spec_codes = self.string_list(table, "spec_codes", path)
        min_gpu_num = self.integer(table, "min_gpu_num", path, default=1, minimum=0, maximum=1024)
        events = self.string_list(table, "events", path, default=SPEC_EVENT_KINDS)
        for kind in events:
            if kind not in SPEC_EVENT_KINDS:
                self.problem(f"{path}.events", f"unknown event {kind!r} (allowed: {', '.join(SPEC_EVENT_KINDS)})")
        if "events" in table and not events:
            self.problem(f"{path}.events", "is empty: list at least one event, or leave the key out for all")
        notify = self.string_list(table, "notify", path, default=tuple(notifiers))
        for n in notify:
            if n not in notifiers:
                known = ", ".join(notifiers) or "none defined"
                self.problem(f"{path}.notify", f"no notifier named {n!r} (defined: {known})")
        interval = self.duration(table, "interval", path, default=None, minimum=MIN_INTERVAL, maximum=DAY)
        confirm = self.integer(table, "confirm", path, default=1, minimum=1, maximum=100)
        remind = self.duration(table, "remind_every", path, default=None, minimum=60.0, maximum=30 * DAY)
        if len(self.problems) != before or name is None or region is None or account is None:
            return None
        return Watch(
            name=name,
            account=account,
            region=region,
            project_id=project_id,
            job_type=job_type,
            engine_id=engine_id,
            project_type=project_type,
            gpu_types=gpu_types,
            spec_codes=spec_codes,
            min_gpu_num=min_gpu_num,
            events=tuple(dict.fromkeys(events)),
            notify=notify,
            interval=interval,
            confirm=confirm,
            remind_every=remind,
        )


def _check_url_shape(url: str) -> str | None:
    """A cheap shape check; apprise itself judges the URL (url_checker)."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme or not rest or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
        return 'expected an apprise URL such as "slack://TokenA/TokenB/TokenC" or "mailtos://user:pass@host"'
    hostport = rest.split("/", 1)[0].rpartition("@")[2]
    port = hostport.rpartition(":")[2] if ":" in hostport and not hostport.endswith("]") else ""
    if port.isascii() and port.isdigit() and not 0 < int(port) < 65536:
        return f"the port {port} is out of range (1-65535)"
    return None


def _check_http_url(url: str) -> str | None:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "is not a valid URL (check the host and port)"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "expected an http:// or https:// URL with a host"
    if port == 0:
        return "the port 0 is out of range (1-65535)"
    return None


def _check_ca_bundle(path: Path) -> str | None:
    if not path.is_file():
        return f"{path} is not a readable file"
    import ssl

    try:
        ssl.create_default_context(cafile=str(path))
    except (ssl.SSLError, OSError, ValueError):
        return f"{path} holds no PEM certificate (a CA bundle is one or more -----BEGIN CERTIFICATE----- blocks)"
    return None


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})" if len(value) < 60 else "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__
