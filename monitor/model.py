"""Values the monitor reasons about: specs, snapshots, queries, events, messages.

Core module: no I/O, no clock. Times are Unix timestamps (float seconds, UTC).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

# Event kinds about one spec, selectable per watch with `events = [...]`.
SPEC_EVENT_KINDS = ("available", "unavailable", "max_num", "added", "removed")
# Event kinds the monitor adds on its own.
BASELINE = "baseline"  # first successful poll: which watched specs are available now
FLAPPING = "flapping"  # availability changed more than 4 times within an hour
STABLE = "stable"  # a flapping spec has been stable for an hour again
REMINDER = "reminder"  # remind_every: still available
DEGRADED = "degraded"  # failure_alert_after consecutive failed polls
RECOVERED = "recovered"  # first good poll after a degraded alert
CLOCK_SKEW = "clock_skew"  # this host's clock is more than 5 minutes off the API's
HEALTH_KINDS = (BASELINE, DEGRADED, RECOVERED, CLOCK_SKEW)


class Spec(NamedTuple):
    """One entry of the spec catalog, as parsed from a successful answer.

    A NamedTuple rather than a frozen dataclass: a poll builds dozens of them, and
    a tuple is built and compared in C (the parser's cost halved).
    """

    key: str  # spec_code, or "spec_code#spec_id" when the answer lists the code twice
    spec_code: str
    no_resource: bool
    max_num: int
    gpu_num: int
    gpu_type: str = ""
    spec_id: int | None = None
    core: str = ""
    cpu: str = ""
    unit_num: int | None = None
    storage: str = ""
    interface_type: int | None = None

    @property
    def available(self) -> bool:
        return not self.no_resource

    def to_json(self) -> dict[str, Any]:
        return self._asdict()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Spec:
        return cls(**data)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The full spec list of one successful poll of one query."""

    taken_at: float
    specs: tuple[Spec, ...]

    def to_json(self) -> list[Any]:
        """Each spec as an array in field order (a tuple encodes fast, in C)."""
        return list(self.specs)

    @classmethod
    def from_json(cls, taken_at: float, data: list[Any]) -> Snapshot:
        return cls(taken_at, tuple(Spec(*d) if isinstance(d, list) else Spec.from_json(d) for d in data))


@dataclass(frozen=True, slots=True)
class Query:
    """One HTTP request a watch needs; watches with equal queries share one request."""

    account: str
    region: str
    project_id: str | None  # None: looked up from the region through IAM
    job_type: str | None
    engine_id: int = 0
    project_type: int = 0
    catalog: str = "job-specs"

    @property
    def key(self) -> str:
        return "/".join(
            [
                self.catalog,
                self.account,
                self.region,
                self.project_id or "-",
                self.job_type or "-",
                str(self.engine_id),
                str(self.project_type),
            ]
        )

    def describe(self) -> str:
        parts = [f"account {self.account}", f"region {self.region}"]
        if self.job_type:
            parts.append(f"job_type {self.job_type}")
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class Event:
    """A detected change (or health notice) for one watch."""

    id: str
    watch: str
    kind: str
    at: float
    spec_key: str | None = None
    data: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "watch": self.watch,
            "kind": self.kind,
            "at": self.at,
            "spec": self.spec_key,
            "data": self.data,
        }

    def to_public_json(self) -> dict[str, Any]:
        """For --json output: the time as ISO 8601 UTC too, and vcpus/memory_gib as in the specs."""
        data = dict(self.data)
        if "core" in data or "cpu" in data:
            data.update(spec_numbers(str(data.pop("core", "")), str(data.pop("cpu", ""))))
        return {**self.to_json(), "data": data, "time": iso_time(self.at)}


def iso_time(ts: float | None) -> str | None:
    """``2026-12-03T15:40:12Z``, or None."""
    if ts is None:
        return None
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def spec_numbers(core: str, cpu: str) -> dict[str, int | None]:
    """The catalog's "core" is the vCPU count and its "cpu" the memory in GiB; say so in JSON."""

    def number(text: str) -> int | None:
        return int(text) if text.isdigit() else None

    return {"vcpus": number(core), "memory_gib": number(cpu)}


@dataclass(frozen=True, slots=True)
class Message:
    """What one notifier is told about one poll of one watch."""

    title: str
    body: str
    event_ids: tuple[str, ...]
    urgent: bool = False  # contains an `available` event: never held by quiet hours
