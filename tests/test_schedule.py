"""Timing rules: poll schedules, backoff, delivery retries, quiet hours."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest

from monitor.schedule import delivery_retry_delay, next_poll, poll_backoff, quiet_until

RNG = random.Random(7)


def test_delivery_retries_go_from_10_seconds_to_15_minutes() -> None:
    delays = [delivery_retry_delay(n, RNG) for n in range(1, 20)]
    assert 10 <= delays[0] <= 11 and 20 <= delays[1] <= 22
    assert all(d <= 900 for d in delays) and delays[-1] >= 900 * 0.99
    assert delays == sorted(delays[:7]) + delays[7:]


@pytest.mark.parametrize(
    ("category", "failures", "low", "high"),
    [
        ("transient", 1, 54, 66),
        ("transient", 3, 216, 264),
        ("transient", 20, 810, 990),  # capped at 15 min
        ("credentials", 1, 300, 300),  # never quickly: the gateway locks keys
        ("clock", 1, 300, 300),
        ("permanent", 1, 300, 300),
        ("permanent", 4, 1800, 1800),
        ("account", 9, 1800, 1800),
    ],
)
def test_poll_backoff(category: str, failures: int, low: float, high: float) -> None:
    delay = poll_backoff(failures, category, 60, None, RNG)
    assert low <= delay <= high


def test_retry_after_is_a_floor() -> None:
    assert poll_backoff(1, "transient", 60, 600, RNG) == 600
    assert poll_backoff(1, "credentials", 60, 10, RNG) == 300


def test_the_schedule_does_not_drift() -> None:
    base, due = 1000.0, 1000.0
    dues = []
    for _ in range(100):
        base, due = next_poll(base, 60, 0.1, due + 0.5, RNG)  # each poll took 0.5 s
        dues.append(due)
    assert base == 1000.0 + 100 * 60
    assert all(0 <= d - (1000 + 60 * (i + 1)) <= 6 for i, d in enumerate(dues))


def test_a_schedule_far_behind_restarts_from_now() -> None:
    base, due = next_poll(0.0, 60, 0.0, 10_000.0, RNG)
    assert base == 10_000.0 and due == 10_000.0


UTC8 = timezone(timedelta(hours=8))


def at(hour: int, minute: int) -> float:
    return datetime(2027, 1, 15, hour, minute, tzinfo=UTC8).timestamp()


@pytest.mark.parametrize(
    ("now", "window", "ends"),
    [
        (at(23, 0), (22 * 60, 7 * 60), datetime(2027, 1, 16, 7, 0, tzinfo=UTC8)),
        (at(3, 0), (22 * 60, 7 * 60), datetime(2027, 1, 15, 7, 0, tzinfo=UTC8)),
        (at(12, 0), (22 * 60, 7 * 60), None),
        (at(12, 30), (12 * 60, 13 * 60), datetime(2027, 1, 15, 13, 0, tzinfo=UTC8)),
        (at(13, 0), (12 * 60, 13 * 60), None),
    ],
)
def test_quiet_hours(now: float, window: tuple[int, int], ends: datetime | None) -> None:
    assert quiet_until(window, now, UTC8) == (ends.timestamp() if ends else None)
