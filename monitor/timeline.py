"""Availability timelines of watched specs, rebuilt from the event history.

Core module: a pure function from events to segments. A segment's state is
``available``, ``sold_out``, ``flapping``, ``absent`` (not in the catalog) or
``unknown`` (before monitoring started, or while the monitor was degraded and
could not see).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .model import BASELINE, DEGRADED, FLAPPING, RECOVERED, STABLE, Event

AVAILABLE, SOLD_OUT, FLAP, ABSENT, UNKNOWN = "available", "sold_out", "flapping", "absent", "unknown"


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    state: str

    @property
    def duration(self) -> float:
        return self.end - self.start


def _state_after(event: Event, key: str, current: str) -> str:
    """The spec's known state after ``event`` (the watch's own events only)."""
    data = event.data
    if event.kind == BASELINE:
        if key in {s.get("key") for s in data.get("available", [])}:
            return AVAILABLE
        if key in data.get("unavailable", []):
            return SOLD_OUT
        return ABSENT
    if event.spec_key != key:
        return current
    if event.kind == "available":
        return AVAILABLE
    if event.kind == "unavailable":
        return SOLD_OUT
    if event.kind == "added":
        return AVAILABLE if data.get("available") else SOLD_OUT
    if event.kind == "removed":
        return ABSENT
    if event.kind == FLAPPING:
        return FLAP
    if event.kind == STABLE:
        return AVAILABLE if data.get("available") else SOLD_OUT
    return current


def spec_timeline(events: Iterable[Event], key: str, start: float, end: float) -> list[Segment]:
    """Segments covering [start, end] for one spec of one watch; ``events`` in time order."""
    known = UNKNOWN
    blind = False  # degraded: the monitor could not see
    changes: list[tuple[float, str]] = []
    for event in events:
        if event.at > end:
            break
        if event.kind == DEGRADED:
            # It became blind when the failures began, not when it said so.
            blind = True
            changes.append((float(event.data.get("since") or event.at), UNKNOWN))
            continue
        if event.kind == RECOVERED:
            blind = False
        known = _state_after(event, key, known)
        if not blind:
            changes.append((event.at, known))
    segments: list[Segment] = []
    state = UNKNOWN
    cursor = start
    for at, new in sorted(changes, key=lambda c: c[0]):
        if at <= start:
            state = new
            continue
        if new == state:
            continue
        segments.append(Segment(cursor, at, state))
        cursor, state = at, new
    segments.append(Segment(cursor, end, state))
    return merge(segments)


def merge(segments: Sequence[Segment]) -> list[Segment]:
    """Join neighbours with the same state and drop empty ones."""
    out: list[Segment] = []
    for seg in segments:
        if seg.duration <= 0:
            continue
        if out and out[-1].state == seg.state:
            out[-1] = Segment(out[-1].start, seg.end, seg.state)
        else:
            out.append(seg)
    return out


def share_available(segments: Sequence[Segment]) -> float | None:
    """The fraction of the known time that the spec was available, or None if nothing is known."""
    known = sum(s.duration for s in segments if s.state not in (UNKNOWN,))
    if known <= 0:
        return None
    return sum(s.duration for s in segments if s.state == AVAILABLE) / known
