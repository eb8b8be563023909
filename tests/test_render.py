"""Messages: a title and a markdown body, one line per change, cut at 20 lines."""

from __future__ import annotations

from datetime import timedelta, timezone

from monitor.model import Event
from monitor.render import render_message

T0 = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC


def ev(kind: str, code: str = "modelarts.vm.gpu.v100", i: int = 0, **data: object) -> Event:
    base = {
        "spec_code": code,
        "gpu_type": "v100",
        "gpu_num": 8,
        "core": "64",
        "cpu": "512",
        "available": kind != "unavailable",
        "max_num": 4,
    }
    base.update(data)
    return Event(f"{i:08x}", "w", kind, T0, code, base)


def test_a_single_change() -> None:
    m = render_message("w", [ev("available")], region="cn-north-4", job_type="train")
    assert m.title == "w: modelarts.vm.gpu.v100 available"
    assert "**modelarts.vm.gpu.v100** (8 × V100, 64 vCPUs, 512 GiB): sold out → **available**, max 4 nodes" in m.body
    assert "(id `00000000`)" in m.body
    assert "region cn-north-4 · job type train" in m.body
    assert "2027-01-15 08:00:00 UTC" in m.body
    assert m.urgent and m.event_ids == ("00000000",)


def test_unavailable_says_how_long_it_lasted() -> None:
    m = render_message("w", [ev("unavailable", lasted=420, lasted_exact=True)], region="r", job_type=None)
    assert "available → **sold out**; was available for 7 min" in m.body
    assert "job type any" in m.body and not m.urgent


def test_max_num_shows_old_and_new() -> None:
    m = render_message("w", [ev("max_num", old_max_num=8, max_num=2)], region="r", job_type="train")
    assert "max nodes 8 → **2**" in m.body


def test_local_time_is_shown_beside_utc() -> None:
    tz = timezone(timedelta(hours=8), "CST")
    m = render_message("w", [ev("available")], region="r", job_type="train", tz=tz)
    assert "2027-01-15 08:00:00 UTC (16:00:00 CST local)" in m.body


def test_long_lists_are_cut_at_20_lines() -> None:
    events = [ev("available", f"spec.{i}", i) for i in range(25)]
    m = render_message("w", events, region="r", job_type="train")
    lines = [line for line in m.body.splitlines() if line.startswith("- ")]
    assert len(lines) == 21 and lines[-1] == "- ... and 5 more"
    assert m.title == "w: 25 available"
    assert len(m.event_ids) == 25


def test_health_messages() -> None:
    degraded = Event(
        "0000dead",
        "w",
        "degraded",
        T0,
        None,
        {"reason": "authentication rejected (APIGW.0301: x)", "failures": 3, "since": T0 - 180},
    )
    m = render_message("w", [degraded], region="r", job_type="train")
    assert m.title == "w: monitoring degraded"
    assert "3 polls in a row failed" in m.body and "APIGW.0301" in m.body and "0000dead" in m.body
    recovered = Event("0000beef", "w", "recovered", T0, None, {"down_for": 720, "failures": 5, "reason": "x"})
    assert (
        render_message("w", [recovered], region="r", job_type="train").title == "w: monitoring recovered after 12 min"
    )
