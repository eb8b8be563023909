"""When to poll and when to retry: pure timing rules.

Core module: every function takes the current time and returns a time or a
delay, so the rules are tested without waiting.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, tzinfo

from .api.errors import ACCOUNT, CLOCK, CREDENTIALS, PERMANENT, REFRESH

DELIVERY_FIRST_RETRY = 10.0
DELIVERY_MAX_RETRY = 15 * 60.0
DELIVERY_GIVE_UP = 12 * 3600.0
CREDENTIALS_PAUSE = 300.0  # the gateway locks a key for 5 minutes after 5 bad signatures
TRANSIENT_MAX = 15 * 60.0
PERMANENT_MAX = 30 * 60.0


def first_poll_delay(interval: float, jitter: float, rng: random.Random) -> float:
    """Spread the first polls of many queries over the jitter window."""
    return rng.uniform(0.0, jitter * interval)


def next_poll(base: float, interval: float, jitter: float, now: float, rng: random.Random) -> tuple[float, float]:
    """(next base, next due) after a successful poll, on the monotonic clock.

    The base advances by whole intervals so the schedule does not drift; the
    due time adds a random part of the jitter window. A base that fell far
    behind (a suspended machine, a very slow poll) restarts from now instead
    of firing a burst of catch-up polls.
    """
    base += interval
    if base < now - interval:
        base = now
    return base, max(now, base + rng.uniform(0.0, jitter * interval))


def poll_backoff(
    failures: int, category: str | None, interval: float, retry_after: float | None, rng: random.Random
) -> float:
    """Delay before the next attempt after ``failures`` failed polls in a row."""
    n = min(max(1, failures), 32)  # beyond this every branch is at its cap anyway
    if category in (CREDENTIALS, CLOCK, REFRESH):
        # Never retried quickly: at most one failed signature per key per 5 minutes.
        delay = max(CREDENTIALS_PAUSE, interval)
    elif category in (PERMANENT, ACCOUNT):
        delay = max(interval, min(CREDENTIALS_PAUSE * 2 ** (n - 1), PERMANENT_MAX))
    else:
        delay = min(interval * 2 ** (n - 1), max(interval, TRANSIENT_MAX))
        delay *= rng.uniform(0.9, 1.1)  # spread retries of queries that failed together
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


def delivery_retry_delay(attempts: int, rng: random.Random) -> float:
    """10 s, 20 s, 40 s ... up to 15 min, with a little jitter."""
    base = DELIVERY_FIRST_RETRY * 2.0 ** min(max(0, attempts - 1), 16)
    return min(base * rng.uniform(1.0, 1.1), DELIVERY_MAX_RETRY)


def quiet_until(window: tuple[int, int] | None, now: float, tz: tzinfo | None = None) -> float | None:
    """End of the quiet-hours window ``now`` falls in (host local time), or None."""
    if window is None:
        return None
    start, end = window
    local = datetime.fromtimestamp(now, tz).astimezone(tz)
    minute = local.hour * 60 + local.minute
    inside = start <= minute < end if start < end else (minute >= start or minute < end)
    if not inside:
        return None
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    ends = midnight + timedelta(minutes=end)
    if ends <= local:
        ends += timedelta(days=1)
    return ends.timestamp()
