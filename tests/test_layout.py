"""The pure core imports no I/O library: tests that act as linters."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "monitor"
CORE = [
    "model.py",
    "detect.py",
    "render.py",
    "config.py",
    "errors.py",
    "catalog.py",
    "schedule.py",
    "durations.py",
    "api/signer.py",
    "api/errors.py",
    "timeline.py",
    "page.py",
]
IO = {"anyio", "httpx", "apprise", "sqlite3", "socket", "h11"}


@pytest.mark.parametrize("module", CORE)
def test_core_modules_do_no_io(module: str) -> None:
    tree = ast.parse((PACKAGE / module).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & IO, f"{module} imports {imported & IO}"


def test_help_does_not_import_heavy_modules() -> None:
    code = (
        "import sys\nfrom monitor.cli import build_parser\nbuild_parser()\n"
        "print(sorted(m for m in ('httpx', 'anyio', 'apprise', 'sqlite3') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("path", sorted(p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")))
def test_every_module_says_its_role(path: str) -> None:
    tree = ast.parse((PACKAGE / path).read_text())
    assert ast.get_docstring(tree), f"{path} has no module docstring"
