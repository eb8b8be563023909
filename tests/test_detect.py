"""Detection rules (SPEC section 5), table-driven, with ``now`` passed in."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from monitor.config import Watch
from monitor.detect import (
    FLAP_WINDOW,
    QueryHealth,
    WatchState,
    process_poll,
    selects,
)
from monitor.errors import PollError
from monitor.model import Snapshot, Spec

T0 = 1_800_000_000.0


def spec(
    code: str = "modelarts.vm.gpu.v100",
    *,
    free: bool = True,
    max_num: int = 4,
    gpu_num: int = 1,
    gpu_type: str = "v100",
    key: str | None = None,
    spec_id: int | None = None,
) -> Spec:
    return Spec(
        key=key or code,
        spec_code=code,
        no_resource=not free,
        max_num=max_num,
        gpu_num=gpu_num,
        gpu_type=gpu_type,
        spec_id=spec_id,
        core="8",
        cpu="64",
    )


def watch(**kw: Any) -> Watch:
    base: dict[str, Any] = {"name": "w", "account": "a", "region": "cn-north-4", "job_type": "train"}
    base.update(kw)
    return Watch(**base)


@dataclass
class Run:
    """Feeds polls to process_poll for one watch and keeps the state between them."""

    w: Watch
    alert_after: int = 3
    health: QueryHealth = field(default_factory=QueryHealth)
    previous: Snapshot | None = None
    state: WatchState | None = None
    now: float = T0

    def poll(self, *specs_or_error: Spec | PollError, dt: float = 60.0) -> list[tuple[str, str | None]]:
        self.now += dt
        if len(specs_or_error) == 1 and isinstance(specs_or_error[0], PollError):
            outcome: Snapshot | PollError = specs_or_error[0]
        else:
            outcome = Snapshot(self.now, tuple(s for s in specs_or_error if isinstance(s, Spec)))
        result = process_poll(
            [self.w],
            self.health,
            self.previous,
            {self.w.name: self.state},
            outcome,
            self.now,
            failure_alert_after=self.alert_after,
        )
        self.health = result.health
        if result.snapshot is not None:
            self.previous = result.snapshot
        self.state = result.states.get(self.w.name, self.state)
        self.last = result
        return [(e.kind, e.spec_key) for e in result.events[self.w.name]]


FAIL = PollError("connection refused")


# Each case: watch options, a list of polls (a list of specs, or FAIL), and the events of the
# last poll. The first poll is always the baseline.
CASES: list[tuple[str, dict[str, Any], list[Any], list[tuple[str, str | None]]]] = [
    ("baseline only", {}, [[spec(free=False)]], [("baseline", None)]),
    ("available", {}, [[spec(free=False)], [spec(free=True)]], [("available", "modelarts.vm.gpu.v100")]),
    ("unavailable", {}, [[spec(free=True)], [spec(free=False)]], [("unavailable", "modelarts.vm.gpu.v100")]),
    ("no change", {}, [[spec()], [spec()]], []),
    ("max_num", {}, [[spec(max_num=4)], [spec(max_num=2)]], [("max_num", "modelarts.vm.gpu.v100")]),
    (
        "added",
        {},
        [[spec()], [spec(), spec("modelarts.vm.gpu.a100", gpu_type="a100")]],
        [("added", "modelarts.vm.gpu.a100")],
    ),
    ("removed needs two polls: first", {}, [[spec(), spec("x.a100", gpu_type="a100")], [spec()]], []),
    (
        "removed needs two polls: second",
        {},
        [[spec(), spec("x.a100", gpu_type="a100")], [spec()], [spec()]],
        [("removed", "x.a100")],
    ),
    (
        "removed then back within one poll says nothing",
        {},
        [[spec(), spec("x.a100", gpu_type="a100")], [spec()], [spec(), spec("x.a100", gpu_type="a100")]],
        [],
    ),
    ("confirm=2 first poll quiet", {"confirm": 2}, [[spec(free=False)], [spec(free=True)]], []),
    (
        "confirm=2 reported on second",
        {"confirm": 2},
        [[spec(free=False)], [spec(free=True)], [spec(free=True)]],
        [("available", "modelarts.vm.gpu.v100")],
    ),
    (
        "confirm=2 a blip is never reported",
        {"confirm": 2},
        [[spec(free=False)], [spec(free=True)], [spec(free=False)], [spec(free=False)]],
        [],
    ),
    (
        "confirm=3 removed needs 3",
        {"confirm": 3},
        [[spec(), spec("x.a100", gpu_type="a100")], [spec()], [spec()], [spec()]],
        [("removed", "x.a100")],
    ),
    (
        "failed polls neither count nor reset a pending change",
        {"confirm": 2},
        [[spec(free=False)], [spec(free=True)], FAIL, [spec(free=True)]],
        [("available", "modelarts.vm.gpu.v100")],
    ),
    ("a failed poll raises no spec event", {}, [[spec(free=False)], FAIL], []),
    (
        "change while failing is reported on the first good poll",
        {},
        [[spec(free=False)], FAIL, FAIL, [spec(free=True)]],
        [("available", "modelarts.vm.gpu.v100")],
    ),
    (
        "gpu_types filter ignores other types",
        {"gpu_types": ("A100",)},
        [
            [spec(free=False), spec("x.a100", gpu_type="a100", free=False)],
            [spec(free=True), spec("x.a100", gpu_type="a100", free=True)],
        ],
        [("available", "x.a100")],
    ),
    (
        "spec_codes glob",
        {"spec_codes": ("modelarts.vm.gpu.8*",)},
        [
            [spec(free=False), spec("modelarts.vm.gpu.8v100", free=False)],
            [spec(free=True), spec("modelarts.vm.gpu.8v100", free=True)],
        ],
        [("available", "modelarts.vm.gpu.8v100")],
    ),
    (
        "min_gpu_num excludes CPU specs by default",
        {},
        [[spec("cpu.8u", gpu_num=0, gpu_type="", free=False)], [spec("cpu.8u", gpu_num=0, gpu_type="", free=True)]],
        [],
    ),
    (
        "min_gpu_num=0 includes CPU specs",
        {"min_gpu_num": 0},
        [[spec("cpu.8u", gpu_num=0, gpu_type="", free=False)], [spec("cpu.8u", gpu_num=0, gpu_type="", free=True)]],
        [("available", "cpu.8u")],
    ),
    (
        "min_gpu_num=8 only big nodes",
        {"min_gpu_num": 8},
        [
            [spec(free=False), spec("x.8v100", gpu_num=8, free=False)],
            [spec(free=True), spec("x.8v100", gpu_num=8, free=True)],
        ],
        [("available", "x.8v100")],
    ),
    (
        "events filter drops unwanted kinds",
        {"events": ("available",)},
        [[spec(free=True, max_num=4)], [spec(free=False, max_num=2)]],
        [],
    ),
    (
        "events filter keeps wanted kinds",
        {"events": ("unavailable",)},
        [[spec(free=True)], [spec(free=False)]],
        [("unavailable", "modelarts.vm.gpu.v100")],
    ),
    (
        "availability and max_num in one poll",
        {},
        [[spec(free=False, max_num=4)], [spec(free=True, max_num=8)]],
        [("available", "modelarts.vm.gpu.v100"), ("max_num", "modelarts.vm.gpu.v100")],
    ),
]


@pytest.mark.parametrize(("options", "polls", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_detection_rules(options: dict[str, Any], polls: list[Any], expected: list[tuple[str, str | None]]) -> None:
    run = Run(watch(**options))
    got: list[tuple[str, str | None]] = []
    for poll in polls:
        got = run.poll(poll) if isinstance(poll, PollError) else run.poll(*poll)
    assert got == expected


def test_the_baseline_summary_lists_what_is_available_now() -> None:
    run = Run(watch())
    run.poll(spec(free=True), spec("x.a100", gpu_type="a100", free=False))
    event = run.last.events["w"][0]
    assert event.kind == "baseline"
    assert [s["spec_code"] for s in event.data["available"]] == ["modelarts.vm.gpu.v100"]
    assert event.data["unavailable"] == ["x.a100"]
    assert event.data["watched"] == 2


def test_unavailable_says_how_long_capacity_lasted() -> None:
    run = Run(watch())
    run.poll(spec(free=False))
    run.poll(spec(free=True), dt=60)
    run.poll(spec(free=False), dt=420)
    event = run.last.events["w"][0]
    assert event.kind == "unavailable"
    assert event.data["lasted"] == 420
    assert event.data["lasted_exact"] is True


def test_capacity_seen_at_the_baseline_lasted_at_least_since_then() -> None:
    run = Run(watch())
    run.poll(spec(free=True))
    run.poll(spec(free=False), dt=300)
    event = run.last.events["w"][0]
    assert event.data["lasted"] == 300 and event.data["lasted_exact"] is False


def test_max_num_event_carries_old_and_new() -> None:
    run = Run(watch())
    run.poll(spec(max_num=4))
    run.poll(spec(max_num=1))
    data = run.last.events["w"][0].data
    assert (data["old_max_num"], data["max_num"]) == (4, 1)


def test_added_says_whether_the_new_spec_is_available() -> None:
    run = Run(watch())
    run.poll(spec())
    run.poll(spec(), spec("x.h100", gpu_type="h100", free=False))
    event = run.last.events["w"][0]
    assert event.kind == "added" and event.data["available"] is False


def test_an_empty_answer_is_suspicious_until_it_comes_three_times() -> None:
    run = Run(watch(), alert_after=10)
    run.poll(spec(), spec("x.a100", gpu_type="a100"))
    assert run.poll() == [] and run.last.error is not None
    assert "suspicious empty answer" in run.last.error.reason
    assert run.last.snapshot is None  # the stored snapshot stays
    assert run.poll() == [] and run.last.error is not None
    assert run.poll() == []  # third time: believed, removals start their confirmation
    assert run.last.error is None
    assert run.poll() == [("removed", "modelarts.vm.gpu.v100"), ("removed", "x.a100")]


def test_an_empty_answer_is_fine_when_the_catalog_was_empty() -> None:
    run = Run(watch())
    run.poll()
    assert run.poll() == [] and run.last.error is None


def test_degraded_after_n_failures_then_recovered_with_downtime() -> None:
    run = Run(watch(), alert_after=3)
    run.poll(spec())
    assert run.poll(FAIL, dt=60) == []
    assert run.poll(FAIL, dt=60) == []
    assert run.poll(FAIL, dt=60) == [("degraded", None)]
    degraded = run.last.events["w"][0]
    assert degraded.data["reason"] == "connection refused" and degraded.data["failures"] == 3
    assert run.poll(FAIL, dt=60) == []  # once only
    assert run.poll(spec(), dt=60) == [("recovered", None)]
    assert run.last.events["w"][0].data["down_for"] == 240
    assert run.poll(spec(), dt=60) == []


def test_no_recovered_without_a_degraded() -> None:
    run = Run(watch(), alert_after=3)
    run.poll(spec())
    run.poll(FAIL)
    assert run.poll(spec()) == []


def test_a_query_that_never_worked_is_degraded_without_a_baseline() -> None:
    run = Run(watch(), alert_after=2)
    run.poll(FAIL)
    assert run.poll(FAIL) == [("degraded", None)]
    assert run.poll(spec()) == [("recovered", None), ("baseline", None)]


def test_flapping_is_reported_once_then_quiet_until_stable_for_an_hour() -> None:
    run = Run(watch())
    run.poll(spec(free=False))
    kinds = []
    for i in range(8):
        kinds += [k for k, _ in run.poll(spec(free=i % 2 == 0), dt=60)]
    assert kinds == ["available", "unavailable", "available", "unavailable", "flapping"]
    # The last flip left it sold out; it stays so.
    assert run.poll(spec(free=False), dt=FLAP_WINDOW - 60) == []  # within an hour of the last flip
    assert run.poll(spec(free=False), dt=120) == [("stable", "modelarts.vm.gpu.v100")]
    stable = run.last.events["w"][0]
    assert stable.data["available"] is False
    assert run.poll(spec(free=True), dt=60) == [("available", "modelarts.vm.gpu.v100")]


def test_changes_spread_over_more_than_an_hour_are_not_flapping() -> None:
    run = Run(watch())
    run.poll(spec(free=False))
    kinds = []
    for i in range(8):
        kinds += [k for k, _ in run.poll(spec(free=i % 2 == 0), dt=1000)]
    assert "flapping" not in kinds and len(kinds) == 8


def test_reminders_while_a_spec_stays_available() -> None:
    run = Run(watch(remind_every=1800))
    run.poll(spec(free=False))
    assert run.poll(spec(free=True), dt=60) == [("available", "modelarts.vm.gpu.v100")]
    assert run.poll(spec(free=True), dt=1200) == []
    assert run.poll(spec(free=True), dt=600) == [("reminder", "modelarts.vm.gpu.v100")]
    assert run.last.events["w"][0].data["available_for"] == 1800
    assert run.poll(spec(free=True), dt=600) == []
    assert run.poll(spec(free=False), dt=60) == [("unavailable", "modelarts.vm.gpu.v100")]


def test_changing_a_watch_filter_takes_a_new_baseline() -> None:
    run = Run(watch())
    run.poll(spec())
    run.w = watch(gpu_types=("a100",))
    assert run.poll(spec(), spec("x.a100", gpu_type="a100")) == [("baseline", None)]


def test_watches_on_one_query_are_judged_separately() -> None:
    a, b = watch(name="a", gpu_types=("v100",)), watch(name="b", gpu_types=("a100",))
    health = QueryHealth()
    first = process_poll(
        [a, b],
        health,
        None,
        {"a": None, "b": None},
        Snapshot(T0, (spec(free=False), spec("x.a100", gpu_type="a100", free=False))),
        T0,
        failure_alert_after=3,
    )
    second = process_poll(
        [a, b],
        first.health,
        first.snapshot,
        dict(first.states),
        Snapshot(T0 + 60, (spec(free=True), spec("x.a100", gpu_type="a100", free=False))),
        T0 + 60,
        failure_alert_after=3,
    )
    assert [e.kind for e in second.events["a"]] == ["available"]
    assert second.events["b"] == []


def test_event_ids_are_short_and_distinct() -> None:
    run = Run(watch())
    run.poll(*(spec(f"x.{i}", free=False) for i in range(30)))
    run.poll(*(spec(f"x.{i}", free=True) for i in range(30)))
    ids = [e.id for e in run.last.events["w"]]
    assert len(set(ids)) == 30 and all(len(i) == 8 for i in ids)


def test_duplicate_spec_codes_are_told_apart_by_id() -> None:
    w = watch()
    one = spec("x.v100", key="x.v100#1", spec_id=1)
    assert selects(w, one)


def test_state_survives_a_json_round_trip() -> None:
    run = Run(watch(confirm=2))
    run.poll(spec(free=False))
    run.poll(spec(free=True))
    assert run.state is not None
    restored = WatchState.from_json(run.state.to_json())
    assert restored == run.state
    run.state = restored
    assert run.poll(spec(free=True)) == [("available", "modelarts.vm.gpu.v100")]
