"""The simulator itself: scenario timelines, and the gateway's checks it must make like the real one."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.simulator import ScenarioError, load_scenario
from monitor.simulator.scenario import parse_scenario


def test_capacity_follows_the_timeline_and_repeats() -> None:
    scenario = parse_scenario(
        {
            "specs": [
                {
                    "spec_code": "x",
                    "no_resource": True,
                    "timeline": [{"at": "10s", "no_resource": False}, {"at": "40s", "no_resource": True}],
                    "repeat": "60s",
                }
            ]
        }
    )
    spec = scenario.specs[0]
    assert [spec.at(t)["no_resource"] for t in (0, 9.9, 10, 39, 40, 59, 60, 70, 101)] == [
        True,
        True,
        False,
        False,
        True,
        True,
        True,
        False,
        True,
    ]


def test_the_built_in_scenario_has_capacity_coming_and_going() -> None:
    scenario = load_scenario()
    v100 = next(s for s in scenario.specs if s.code == "modelarts.vm.gpu.v100")
    assert v100.at(0)["no_resource"] is True and v100.at(9)["no_resource"] is False


def test_a_broken_scenario_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "s.toml"
    bad.write_text("[[specs]]\nmax_num = 3\n")
    with pytest.raises(ScenarioError, match="spec_code is required"):
        load_scenario(bad)
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "missing.toml")
