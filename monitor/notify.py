"""Delivery through apprise, one URL at a time.

Each apprise URL is its own delivery, so one failing URL never causes a resend
to the others. apprise is imported only here and only when something is sent
(it costs ~0.4 s and ~40 MiB), so the command line starts fast.

apprise never raises on a failed delivery; it returns a result and logs the
reason. The reason (an SMTP 535, Slack's answer) is captured from its log
entries, redacted, and carried in a DeliveryError for the outbox to retry.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel

from .config import Notifier
from .errors import DeliveryError
from .redact import mask_url, redact, register, url_secrets
from .store import Target

log = logging.getLogger("monitor.notify")
T = TypeVar("T")

SEND_TIMEOUT = 60.0  # a notifier that hangs longer counts as failed; the thread is abandoned


async def run_in_daemon_thread(fn: Callable[..., T], *args: Any, timeout: float) -> T:  # noqa: ASYNC109
    """Run a blocking call in a daemon thread; give up waiting after ``timeout``.

    Unlike a worker thread, an abandoned daemon thread cannot hold the process
    open at exit, so a hanging SMTP server never delays shutdown.
    """
    box: dict[str, Any] = {}
    done = anyio.Event()
    token = anyio.lowlevel.current_token()

    def target() -> None:
        try:
            box["value"] = fn(*args)
        except BaseException as exc:
            box["error"] = exc
        try:
            anyio.from_thread.run_sync(done.set, token=token)
        except Exception:
            pass

    threading.Thread(target=target, name="modelarts-monitor-send", daemon=True).start()
    with anyio.move_on_after(timeout):
        await done.wait()
    if not done.is_set():
        raise TimeoutError
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value


class AppriseNotifier:
    """Knows each notifier's URLs and delivers one message to one of them.

    A URL is known by its notifier and position (``team-slack#0``), not by its text,
    so a rotated token (a new URL in the same place) still gets what is waiting in
    the outbox. An apprise configuration file is opened up into its URLs
    (``team-slack#config0``, ...), each delivered, retried and masked on its own.
    """

    def __init__(self, notifiers: Mapping[str, Notifier], *, timeout: float = SEND_TIMEOUT):
        self.timeout = timeout
        self._urls: dict[str, str] = {}  # key -> URL
        self._targets: dict[str, list[Target]] = {}
        self._unexpanded: list[Notifier] = []
        for notifier in notifiers.values():
            self._targets[notifier.name] = [
                self._add(f"{notifier.name}#{index}", secret.reveal(), notifier.name)
                for index, secret in enumerate(notifier.urls)
            ]
            if notifier.config is not None:
                self._unexpanded.append(notifier)

    def _add(self, key: str, url: str, notifier: str) -> Target:
        self._urls[key] = url
        return Target(notifier, key, mask_url(url))

    def _expand(self) -> None:
        """Read the apprise configuration files (only when they are first needed: apprise is slow)."""
        still: list[Notifier] = []
        for notifier in self._unexpanded:
            assert notifier.config is not None
            try:
                urls = config_file_urls(str(notifier.config), notifier.tag)
            except DeliveryError as exc:
                log.error("notifier %s: %s; trying again with the next message", notifier.name, exc.reason)
                still.append(notifier)
                continue
            for index, url in enumerate(urls):
                for part in url_secrets(url):
                    register(part)
                self._targets[notifier.name].append(self._add(f"{notifier.name}#config{index}", url, notifier.name))
        self._unexpanded = still

    def targets(self, names: Iterable[str]) -> list[Target]:
        if self._unexpanded:
            self._expand()
        return [t for name in names for t in self._targets.get(name, [])]

    def knows(self, key: str) -> bool:
        if self._unexpanded:
            self._expand()
        return key in self._urls

    def label(self, key: str) -> str:
        """The URL as it is configured now, masked (after a rotation it differs from the outbox's)."""
        url = self._urls.get(key)
        return mask_url(url) if url else key

    async def send(self, key: str, title: str, body: str) -> None:
        """Deliver to one URL; raises DeliveryError with a redacted reason."""
        url = self._urls.get(key)
        if url is None:
            raise DeliveryError("the notifier URL is no longer configured", permanent=True)
        try:
            await run_in_daemon_thread(_send_blocking, url, title, body, timeout=self.timeout + 5)
        except TimeoutError:
            raise DeliveryError(f"no answer within {self.timeout:g}s (the notifier hangs)") from None


def config_file_urls(path: str, tag: str | None) -> list[str]:
    """The URLs an apprise configuration file holds (with ``tag``: those so tagged), in file order."""
    import apprise

    conf = apprise.AppriseConfig()
    if not conf.add(path):
        raise DeliveryError(f"cannot read the apprise configuration {path}")
    if tag:
        ap = apprise.Apprise()
        ap.add(conf)
        services = list(ap.find(tag))
    else:
        services = conf.services()
    return [str(s.url(privacy=False)) for s in services]  # type: ignore[no-untyped-call]


def _send_blocking(url: str, title: str, body: str) -> None:
    import apprise

    asset = apprise.AppriseAsset(
        app_id="modelarts-monitor", app_desc="modelarts-monitor", app_url="https://github.com/"
    )
    ap = apprise.Apprise(asset=asset)
    if not ap.add(url):
        raise DeliveryError(f"apprise does not understand {mask_url(url)}", permanent=True)
    entries: list[str] = []
    details: list[str] = []

    def collect(entry: Any, _plugin: Any = None) -> None:
        level = str(getattr(entry, "level", "")).upper()
        message = str(getattr(entry, "message", entry))
        if level in ("WARNING", "ERROR", "CRITICAL") or "response" in message.lower():
            entries.append(message)
        elif message.startswith("Socket Exception"):
            # "...[Errno 111] Connection refused": the part a person needs
            found = _ERRNO.findall(message)
            details.append((found[-1] if found else message.partition(":")[2]).strip().lower())

    with _apprise_debug():
        try:
            result = ap.notify(
                body=body,
                title=title,
                body_format=apprise.NotifyFormat.MARKDOWN,
                log_level=logging.DEBUG,
                log_callback=collect,
            )
        except TypeError:  # apprise before 2.0: no log capture, a plain bool
            result = ap.notify(body=body, title=title, body_format=apprise.NotifyFormat.MARKDOWN)
    if result:
        return
    if not entries:
        for service in _services(result):
            entries.extend(getattr(e, "message", str(e)) for e in service.logs())
    reason = "; ".join(dict.fromkeys(e.strip().rstrip(".") for e in entries if e.strip()))
    reason = reason or "apprise reported a failure"
    if details:
        reason += f" ({', '.join(dict.fromkeys(details))})"
    if len(reason) > 300:
        reason = reason[:297] + "..."
    raise DeliveryError(redact(reason))


_ERRNO = re.compile(r"\[Errno -?\d+\] ([^\"')]+)")
_debug_lock = threading.Lock()
_debug_users = 0
_debug_previous = logging.NOTSET


@contextmanager
def _apprise_debug() -> Iterator[None]:
    """apprise says why a send failed (connection refused, an SMTP code) only at DEBUG; the log
    handler keeps such library lines out of the log (logs._LibraryFloor)."""
    global _debug_users, _debug_previous
    logger = logging.getLogger("apprise")
    with _debug_lock:
        if _debug_users == 0:
            _debug_previous = logger.level
            logger.setLevel(logging.DEBUG)
        _debug_users += 1
    try:
        yield
    finally:
        with _debug_lock:
            _debug_users -= 1
            if _debug_users == 0:
                logger.setLevel(_debug_previous)


def _services(result: Any) -> list[Any]:
    try:
        return list(result)
    except TypeError:
        return []
