"""What changed, and what do we tell: the pure heart of the monitor.

:func:`process_poll` takes one poll outcome of one query (a snapshot or a
PollError), the stored state and ``now``, and returns the new state and the
events for each watch. No I/O, no clock: the daemon commits the result in one
transaction and only then sends anything.

Rules (SPEC section 5):

- A watch without state (or whose filter changed) takes a baseline and sends
  one summary of what is available now.
- Each watched spec has a *reported* view (what the team was last told). An
  observation that differs from it is *pending* until it has held for
  ``confirm`` consecutive successful polls (``removed``: at least 2); then the
  events are raised and the reported view moves. Failed polls neither count
  nor reset a pending change.
- A spec whose availability changes more than 4 times within an hour raises
  one ``flapping`` event, then stays quiet until it has been stable for an
  hour, when its current state is reported (``stable``).
- A successful answer with zero specs, when the last snapshot had some, is a
  failed poll ("suspicious empty answer") until it has come 3 times in a row.
- ``failure_alert_after`` consecutive failed polls raise one ``degraded`` per
  watch (rejected credentials, account problems and clock skew at once);
  the next success raises ``recovered`` with the downtime.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any

from .config import Watch
from .errors import PollError
from .model import (
    BASELINE,
    DEGRADED,
    FLAPPING,
    RECOVERED,
    REMINDER,
    STABLE,
    Event,
    Snapshot,
    Spec,
)

FLAP_WINDOW = 3600.0
FLAP_LIMIT = 4  # more changes than this within FLAP_WINDOW is flapping
STABLE_AFTER = 3600.0
EMPTY_ACCEPT_AFTER = 3  # a zero-spec answer is believed when it comes this many times in a row
# Failures no retry will cure: say so at once instead of after failure_alert_after polls,
# since these queries are retried only every 5 minutes or more.
ALERT_AT_ONCE = ("credentials", "account", "clock", "permanent")
REMOVED_MIN_CONFIRM = 2


# -- state ----------------------------------------------------------------------------------
@dataclass
class SpecState:
    """What a watch last reported about one spec, and what is pending."""

    present: bool
    available: bool
    max_num: int
    since: float  # when the current availability began
    since_exact: bool  # False when `since` is only when monitoring started
    info: dict[str, Any] = field(default_factory=dict)  # spec fields for messages
    pending: dict[str, Any] | None = None  # {"obs": [present, available, max_num], "count", "first"}
    flaps: list[float] = field(default_factory=list)
    flapping: bool = False
    last_change: float | None = None
    reminded: float | None = None

    def observed(self) -> tuple[bool, bool, int]:
        return (self.present, self.available, self.max_num)

    def to_json(self) -> dict[str, Any]:
        return {
            "present": self.present,
            "available": self.available,
            "max_num": self.max_num,
            "since": self.since,
            "since_exact": self.since_exact,
            "info": self.info,
            "pending": self.pending,
            "flaps": self.flaps,
            "flapping": self.flapping,
            "last_change": self.last_change,
            "reminded": self.reminded,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SpecState:
        return cls(**data)


@dataclass
class WatchState:
    fingerprint: str
    baseline_at: float
    specs: dict[str, SpecState] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "baseline_at": self.baseline_at,
            "specs": {k: v.to_json() for k, v in self.specs.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WatchState:
        return cls(
            fingerprint=data["fingerprint"],
            baseline_at=data["baseline_at"],
            specs={k: SpecState.from_json(v) for k, v in data["specs"].items()},
        )

    def copy(self) -> WatchState:
        return WatchState.from_json(self.to_json())

    def settled(self) -> bool:
        """Nothing pending or flapping: the same catalog again cannot change anything."""
        return not any(s.pending is not None or s.flapping for s in self.specs.values())


@dataclass
class QueryHealth:
    """Consecutive failures of one query and who was told it is degraded."""

    failures: int = 0
    first_failure_at: float | None = None
    last_error: str | None = None
    alerted: list[str] = field(default_factory=list)  # watches that got `degraded`
    empty_streak: int = 0
    last_success_at: float | None = None
    last_poll_at: float | None = None
    retry_at: float | None = None  # after a failure: not before this (kept across restarts)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> QueryHealth:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class PollResult:
    """Everything one poll changes; committed in one transaction."""

    health: QueryHealth
    snapshot: Snapshot | None  # the snapshot to store, None when the poll failed
    states: dict[str, WatchState]  # per watch name; only watches whose state changed
    events: dict[str, list[Event]]  # per watch name, in order
    error: PollError | None = None  # why the poll counts as failed
    snapshot_changed: bool = True  # False: the same catalog as last time, no need to store it again

    @property
    def all_events(self) -> list[Event]:
        return [e for events in self.events.values() for e in events]


# -- selection ------------------------------------------------------------------------------
def selects(watch: Watch, spec: Spec) -> bool:
    """Does the watch's filter select this spec?"""
    if spec.gpu_num < watch.min_gpu_num:
        return False
    if watch.gpu_types and spec.gpu_type.lower() not in watch.gpu_type_set:
        return False
    if watch.spec_codes:
        code = spec.spec_code.lower()
        return any(pattern.match(code) for pattern in watch.spec_code_patterns)
    return True


def spec_info(spec: Spec) -> dict[str, Any]:
    return {
        "spec_code": spec.spec_code,
        "gpu_type": spec.gpu_type,
        "gpu_num": spec.gpu_num,
        "core": spec.core,
        "cpu": spec.cpu,
    }


# -- event construction ---------------------------------------------------------------------
def new_event(watch: str, kind: str, now: float, spec_key: str | None = None, seq: int = 0, **data: Any) -> Event:
    """An event with a short id derived from what it is about (8 hex digits)."""
    seed = f"{watch}|{kind}|{spec_key}|{now!r}|{seq}"
    event_id = hashlib.sha256(seed.encode("utf-8")).hexdigest()[:8]
    return Event(event_id, watch, kind, now, spec_key, data)


class _EventMaker:
    def __init__(self, watch: str, now: float):
        self.watch = watch
        self.now = now
        self.events: list[Event] = []

    def add(self, kind: str, spec_key: str | None = None, **data: Any) -> None:
        self.events.append(new_event(self.watch, kind, self.now, spec_key, len(self.events), **data))


# -- per-watch detection --------------------------------------------------------------------
def baseline(watch: Watch, snapshot: Snapshot, now: float) -> tuple[WatchState, list[Event]]:
    """A fresh state from the first successful poll, and its one summary event."""
    state = WatchState(fingerprint=watch.fingerprint(), baseline_at=now)
    for spec in snapshot.specs:
        if selects(watch, spec):
            state.specs[spec.key] = SpecState(
                present=True,
                available=spec.available,
                max_num=spec.max_num,
                since=now,
                since_exact=False,
                info=spec_info(spec),
            )
    maker = _EventMaker(watch.name, now)
    available = sorted(k for k, s in state.specs.items() if s.available)
    maker.add(
        BASELINE,
        None,
        watched=len(state.specs),
        available=[_describe(state.specs[k], k) for k in available],
        unavailable=sorted(k for k, s in state.specs.items() if not s.available),
    )
    return state, maker.events


def _quiet(watch: Watch, state: WatchState, observed: dict[str, Spec]) -> bool:
    """True when this poll cannot change anything: same view, nothing pending or timed."""
    if watch.remind_every or len(state.specs) != len(observed):
        return False
    for key, spec in observed.items():
        cur = state.specs.get(key)
        if (
            cur is None
            or cur.pending is not None
            or cur.flapping
            or not cur.present
            or cur.available == spec.no_resource
            or cur.max_num != spec.max_num
        ):
            return False
        info = cur.info
        if (
            info.get("gpu_num") != spec.gpu_num
            or info.get("gpu_type") != spec.gpu_type
            or info.get("core") != spec.core
            or info.get("cpu") != spec.cpu
        ):
            return False
    return True


def detect(watch: Watch, previous: WatchState, snapshot: Snapshot, now: float) -> tuple[WatchState, list[Event]]:
    """Compare one successful snapshot with a watch's reported view.

    Returns ``previous`` itself when nothing changed, so callers can skip storing it.
    """
    observed = {s.key: s for s in snapshot.specs if selects(watch, s)}
    if _quiet(watch, previous, observed):
        return previous, []
    state = previous.copy()
    maker = _EventMaker(watch.name, now)
    keys = list(dict.fromkeys([*state.specs, *observed]))
    for key in keys:
        spec = observed.get(key)
        current = state.specs.get(key)
        if current is None:
            assert spec is not None
            current = SpecState(
                present=False,
                available=False,
                max_num=0,
                since=now,
                since_exact=True,
                info=spec_info(spec),
            )
            state.specs[key] = current
        if spec is not None:
            current.info = spec_info(spec)
            obs = (True, spec.available, spec.max_num)
        else:
            obs = (False, current.available, current.max_num)
        _observe(watch, key, current, obs, now, maker)
        if not current.present and current.pending is None:
            del state.specs[key]
    return state, maker.events


def _observe(
    watch: Watch, key: str, cur: SpecState, obs: tuple[bool, bool, int], now: float, maker: _EventMaker
) -> None:
    if obs == cur.observed() or (not obs[0] and not cur.present):
        cur.pending = None
    else:
        pending = cur.pending
        if pending is not None and tuple(pending["obs"]) == obs:
            pending["count"] += 1
        else:
            pending = cur.pending = {"obs": list(obs), "count": 1, "first": now}
        needed = watch.confirm
        if cur.present and not obs[0]:
            needed = max(needed, REMOVED_MIN_CONFIRM)
        if pending["count"] >= needed:
            _commit(watch, key, cur, obs, pending["first"], now, maker)
            cur.pending = None
    _after_poll(watch, key, cur, now, maker)


def _commit(
    watch: Watch,
    key: str,
    cur: SpecState,
    obs: tuple[bool, bool, int],
    first_seen: float,
    now: float,
    maker: _EventMaker,
) -> None:
    present, available, max_num = obs
    wanted = set(watch.events)
    if not cur.present:
        cur.present, cur.available, cur.max_num = True, available, max_num
        cur.since, cur.since_exact = first_seen, True
        cur.flaps, cur.flapping, cur.reminded = [], False, None
        if "added" in wanted:
            maker.add("added", key, **_describe(cur, key))
        return
    if not present:
        was_available = cur.available
        duration = now - cur.since
        cur.present = False
        if "removed" in wanted:
            maker.add(
                "removed",
                key,
                **_describe(cur, key),
                was_available=was_available,
                lasted=duration if was_available else None,
                lasted_exact=cur.since_exact,
            )
        return
    old_max = cur.max_num
    if available != cur.available:
        lasted = first_seen - cur.since
        lasted_exact = cur.since_exact
        cur.available, cur.since, cur.since_exact = available, first_seen, True
        cur.reminded = None
        cur.flaps = [t for t in cur.flaps if now - t < FLAP_WINDOW] + [now]
        cur.last_change = now
        if cur.flapping:
            pass  # quiet until stable; the state is reported when the flapping ends
        elif len(cur.flaps) > FLAP_LIMIT:
            cur.flapping = True
            if "available" in wanted or "unavailable" in wanted:
                maker.add(
                    FLAPPING,
                    key,
                    **_describe(cur, key),
                    changes=len(cur.flaps),
                    window=FLAP_WINDOW,
                    quiet_for=STABLE_AFTER,
                )
        else:
            kind = "available" if available else "unavailable"
            if kind in wanted:
                extra: dict[str, Any] = {}
                if not available:
                    extra = {"lasted": lasted, "lasted_exact": lasted_exact}
                maker.add(kind, key, **_describe(cur, key), **extra)
    if max_num != old_max:
        cur.max_num = max_num
        if "max_num" in wanted and not cur.flapping:
            maker.add("max_num", key, **_describe(cur, key), old_max_num=old_max)


def _after_poll(watch: Watch, key: str, cur: SpecState, now: float, maker: _EventMaker) -> None:
    if not cur.present:
        return
    if cur.flapping and cur.last_change is not None and now - cur.last_change >= STABLE_AFTER:
        cur.flapping = False
        cur.flaps = []
        cur.reminded = now if cur.available else None
        if "available" in watch.events or "unavailable" in watch.events:
            maker.add(STABLE, key, **_describe(cur, key), stable_for=now - cur.last_change)
        return
    if (
        watch.remind_every
        and cur.available
        and not cur.flapping
        and "available" in watch.events
        and now - (cur.reminded if cur.reminded is not None else cur.since) >= watch.remind_every
    ):
        cur.reminded = now
        maker.add(REMINDER, key, **_describe(cur, key), available_for=now - cur.since, available_exact=cur.since_exact)


def _describe(cur: SpecState, key: str) -> dict[str, Any]:
    return {**cur.info, "key": key, "available": cur.available, "max_num": cur.max_num}


# -- query health ---------------------------------------------------------------------------
def judge_empty(
    health: QueryHealth, previous: Snapshot | None, snapshot: Snapshot
) -> tuple[QueryHealth, PollError | None]:
    """Apply the suspicious-empty rule: an empty answer is failed until it comes 3 times."""
    if snapshot.specs or previous is None or not previous.specs:
        return replace(health, empty_streak=0), None
    streak = health.empty_streak + 1
    health = replace(health, empty_streak=streak)
    if streak >= EMPTY_ACCEPT_AFTER:
        return health, None
    return health, PollError(
        f"suspicious empty answer: no specs listed, the last answer had {len(previous.specs)} "
        f"({streak} of {EMPTY_ACCEPT_AFTER} before it is believed)",
        category="transient",
    )


def process_poll(
    watches: list[Watch],
    health: QueryHealth,
    previous: Snapshot | None,
    states: dict[str, WatchState | None],
    outcome: Snapshot | PollError,
    now: float,
    *,
    failure_alert_after: int,
) -> PollResult:
    """One poll of one query, for every watch on it."""
    error = outcome if isinstance(outcome, PollError) else None
    if isinstance(outcome, Snapshot):
        health, error = judge_empty(health, previous, outcome)
    else:
        health = replace(health, empty_streak=0)  # "three in a row": a failure in between breaks it
    events: dict[str, list[Event]] = {w.name: [] for w in watches}
    if error is not None:
        health = replace(
            health,
            failures=health.failures + 1,
            first_failure_at=health.first_failure_at if health.failures else now,
            last_error=error.describe(),
            last_poll_at=now,
            alerted=list(health.alerted),
        )
        if health.failures >= failure_alert_after or error.category in ALERT_AT_ONCE:
            for w in watches:
                if w.name in health.alerted:
                    continue
                health.alerted.append(w.name)
                maker = _EventMaker(w.name, now)
                maker.add(
                    DEGRADED,
                    None,
                    reason=error.describe(),
                    category=error.category,
                    failures=health.failures,
                    since=health.first_failure_at,
                )
                events[w.name].extend(maker.events)
        return PollResult(health, None, {}, events, error)

    assert isinstance(outcome, Snapshot)
    snapshot = outcome
    # The very same specs (the client reuses them for a byte-identical answer).
    same = previous is not None and previous.specs is snapshot.specs
    new_states: dict[str, WatchState] = {}
    for w in watches:
        maker_events: list[Event] = []
        if w.name in health.alerted:
            maker = _EventMaker(w.name, now)
            maker.add(
                RECOVERED,
                None,
                down_for=now - (health.first_failure_at or now),
                failures=health.failures,
                reason=health.last_error,
            )
            maker_events.extend(maker.events)
        state = states.get(w.name)
        if state is None or state.fingerprint != w.fingerprint():
            new_state, found = baseline(w, snapshot, now)
        elif same and not w.remind_every and state.settled():
            new_state, found = state, []
        else:
            new_state, found = detect(w, state, snapshot, now)
        maker_events.extend(_unique_ids(maker_events, found))
        if new_state is not state:
            new_states[w.name] = new_state
        events[w.name] = maker_events
    health = replace(
        health,
        failures=0,
        first_failure_at=None,
        last_error=None,
        alerted=[],
        last_success_at=now,
        last_poll_at=now,
    )
    changed = previous is None or previous.specs != snapshot.specs
    return PollResult(health, snapshot, new_states, events, None, snapshot_changed=changed)


def _unique_ids(before: list[Event], found: list[Event]) -> list[Event]:
    """Event ids are a hash of their parts; re-seed the rare one that repeats an earlier id."""
    seen = {e.id for e in before}
    out = []
    for e in found:
        if e.id in seen:
            e = replace(e, id=hashlib.sha256(f"{e.id}|{len(seen)}".encode()).hexdigest()[:8])
        seen.add(e.id)
        out.append(e)
    return out
