"""Human durations ("90s", "5m", "1h30m", "7d") and their display ("7 min")."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(text: str) -> float:
    """Seconds in ``text``; raises ValueError with a message fit for a user."""
    compact = text.strip().lower().replace(" ", "")
    if not compact:
        raise ValueError('expected a duration such as "30s", "5m", "2h" or "7d"')
    pos = 0
    total = 0.0
    for match in _PART.finditer(compact):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(compact):
        raise ValueError(
            f"{text!r} is not a duration; write a number and a unit (ms, s, m, h, d, w), "
            'such as "30s", "5m", "1h30m" or "7d"'
        )
    return total


def format_duration(seconds: float) -> str:
    """A short, readable duration: "45 s", "7 min", "2 h 5 min", "3 d 4 h"."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{int(seconds)} s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"
