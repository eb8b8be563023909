#!/usr/bin/env python3
"""Set up a virtual environment and run the demo or the tests; needs only python3.

    python3 tasks.py demo            # the simulator, the daemon and live alerts
    python3 tasks.py test            # the whole test suite
    python3 tasks.py bench           # the benchmarks (about 9 minutes; see bench/README.md)
    python3 tasks.py test -k signer  # extra arguments go to pytest / the demo

The environment lives in .venv next to this file and is (re)installed only when
pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")


def ensure_env(extras: str) -> None:
    if sys.version_info < (3, 10):  # noqa: UP036 - this script runs before any check of ours
        sys.exit(f"modelarts-monitor needs Python 3.10 or newer; this is {sys.version.split()[0]}")
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + extras.encode()).hexdigest()
    stamp = VENV / ".installed"
    if stamp.exists() and PYTHON.exists():
        have = stamp.read_text().split()
        if want in have:
            return
    if not PYTHON.exists():
        print(f"Creating a virtual environment in {VENV} ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    target = f".[{extras}]" if extras else "."
    print(f"Installing modelarts-monitor{f'[{extras}]' if extras else ''} into .venv ...", flush=True)
    cmd = [str(PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--editable", target]
    if subprocess.call(cmd, cwd=ROOT) != 0:
        sys.exit("Installing failed; see pip's message above.")
    previous = stamp.read_text().split() if stamp.exists() else []
    stamp.write_text("\n".join([*previous, want]) + "\n")


def run_forwarding_signals(args: list[str]) -> int:
    """Run a command and pass SIGINT/SIGTERM on to it, so it stops cleanly and its status is ours."""
    child = subprocess.Popen(args, cwd=ROOT)

    def forward(signum: int, frame: object) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    return child.wait()


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test", "bench"):
        print(__doc__.strip())
        return 64
    command, rest = argv[0], argv[1:]
    if command == "demo":
        ensure_env("")
        return run_forwarding_signals([str(BIN / "modelarts-monitor"), "demo", *rest])
    if command == "bench":
        ensure_env("")
        return subprocess.call([str(PYTHON), str(ROOT / "bench" / "run.py"), *rest], cwd=ROOT)
    ensure_env("test")
    status = subprocess.call([str(PYTHON), "-m", "pytest", *rest], cwd=ROOT)
    if status == 5:
        print("pytest collected no tests: treating that as a failure", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
