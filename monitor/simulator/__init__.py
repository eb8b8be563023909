"""The project's stand-in for the ModelArts and IAM APIs (``modelarts-monitor simulate``)."""

from __future__ import annotations

from .scenario import Scenario, ScenarioError, load_scenario
from .server import Fault, RequestRecord, Simulator

__all__ = ["Fault", "RequestRecord", "Scenario", "ScenarioError", "Simulator", "load_scenario"]
