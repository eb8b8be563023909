"""Simulator scenarios: accounts, projects and specs whose capacity changes over time.

A scenario is a TOML file (see ``demo.toml`` beside this module)::

    [[accounts]]
    access_key = "DEMOACCESSKEY0000001"
    secret_key = "demo-secret-key"
    # security_token = "..."       temporary AK/SK: requests must carry it
    domain = "demo"                # for auth = "password"
    username = "demo"
    password = "demo-password"

    [[projects]]
    id = "0123456789abcdef0123456789abcdef"
    name = "cn-north-4"

    [[specs]]
    spec_code = "modelarts.vm.gpu.v100"
    gpu_type = "v100"
    gpu_num = 1
    core = "8"
    cpu = "64"
    max_num = 4
    no_resource = true
    job_types = ["train"]          # default: train and inference
    timeline = [ { at = "8s", no_resource = false }, { at = "40s", no_resource = true } ]
    repeat = "60s"                 # optional: the timeline starts over with this period
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..durations import parse_duration

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SPEC_FIELDS = (
    "spec_id",
    "core",
    "cpu",
    "gpu_num",
    "gpu_type",
    "spec_code",
    "max_num",
    "storage",
    "interface_type",
    "no_resource",
    "unit_num",
)


class ScenarioError(ValueError):
    pass


@dataclass
class SimAccount:
    access_key: str | None = None
    secret_key: str | None = None
    security_token: str | None = None
    domain: str | None = None
    username: str | None = None
    password: str | None = None
    domain_id: str = "d0000000000000000000000000000001"


@dataclass
class SimProject:
    id: str
    name: str


@dataclass
class SimSpec:
    fields: dict[str, Any]
    job_types: tuple[str, ...] = ("train", "inference")
    timeline: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    repeat: float | None = None

    @property
    def code(self) -> str:
        return str(self.fields["spec_code"])

    def at(self, elapsed: float) -> dict[str, Any]:
        """The spec's fields ``elapsed`` seconds after the simulator started."""
        if not self.timeline:
            return dict(self.fields)
        t = elapsed % self.repeat if self.repeat else elapsed
        current = dict(self.fields)
        for when, changes in self.timeline:
            if when <= t:
                current.update(changes)
        return current


@dataclass
class Scenario:
    accounts: list[SimAccount]
    projects: list[SimProject]
    specs: list[SimSpec]
    token_ttl: float = 86400.0


def default_scenario_text() -> str:
    return resources.files(__package__).joinpath("demo.toml").read_text(encoding="utf-8")


def load_scenario(path: str | Path | None = None) -> Scenario:
    if path is None:
        text, name = default_scenario_text(), "demo.toml"
    else:
        from ..config import read_small_file

        try:
            text, name = read_small_file(Path(path)).decode("utf-8"), str(path)
        except OSError as exc:
            raise ScenarioError(f"{path}: cannot read: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise ScenarioError(f"{path}: not UTF-8 text") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{name}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ScenarioError(f"{name}: not valid TOML: nested too deeply") from None
    try:
        return parse_scenario(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise ScenarioError(f"{name}: {exc}") from None


def parse_scenario(data: dict[str, Any]) -> Scenario:
    accounts = []
    for i, raw in enumerate(data.get("accounts", [])):
        unknown = set(raw) - set(SimAccount.__dataclass_fields__)
        if unknown:
            raise ValueError(f"accounts[{i}]: unknown keys {sorted(unknown)}")
        if any(not isinstance(v, str) for v in raw.values()):
            raise ValueError(f"accounts[{i}]: every value must be a string")
        accounts.append(SimAccount(**raw))
    projects = [SimProject(str(p["id"]), str(p["name"])) for p in data.get("projects", [])]
    specs = []
    for i, raw in enumerate(data.get("specs", [])):
        raw = dict(raw)
        job_types = tuple(raw.pop("job_types", ("train", "inference")))
        timeline = []
        for entry in raw.pop("timeline", []):
            entry = dict(entry)
            when = parse_duration(str(entry.pop("at")))
            timeline.append((when, entry))
        timeline.sort(key=lambda item: item[0])
        repeat = raw.pop("repeat", None)
        fields = {
            "spec_id": i + 1,
            "core": "8",
            "cpu": "64",
            "gpu_num": 0,
            "gpu_type": "",
            "max_num": 1,
            "storage": "",
            "interface_type": 1,
            "no_resource": False,
            "unit_num": 1,
        }
        fields.update(raw)
        if "spec_code" not in fields:
            raise ValueError(f"specs[{i}]: spec_code is required")
        specs.append(SimSpec(fields, job_types, timeline, parse_duration(repeat) if repeat else None))
    return Scenario(accounts, projects, specs, float(data.get("token_ttl", 86400.0)))
