"""Start-up: wall time of `modelarts-monitor --help` and `check` on a warm cache.

Runs the installed command as a user would, several times after a warm-up,
and reports the median (the minimum shows the floor on this machine).
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

RUNS = 15


def command() -> list[str]:
    found = shutil.which("modelarts-monitor", path=str(Path(sys.executable).parent))
    return [found] if found else [sys.executable, "-m", "monitor"]


def timed(args: list[str]) -> list[float]:
    for _ in range(2):  # warm the page cache and .pyc files
        subprocess.run(args, capture_output=True, check=True)
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run(args, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return times


def run() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.toml"
        config.write_text(
            textwrap.dedent(f"""\
            [monitor]
            state_dir = "{tmp}/state"
            [accounts.main]
            access_key = "AKEXAMPLE000000000001"
            secret_key = "SKEXAMPLE000000000001"
            [notifiers.team-slack]
            urls = ["slack://T0000AAAA/B0000BBBB/cccccccccccccccccccccccc/#gpu"]
            [notifiers.oncall-mail]
            urls = ["mailtos://alerts:app-password@smtp.example.com?to=oncall@example.com"]
            [[watch]]
            name = "v100-train"
            region = "cn-north-4"
            job_type = "train"
            gpu_types = ["v100"]
            """)
        )
        config.chmod(0o600)
        base = command()
        help_times = timed([*base, "--help"])
        check_times = timed([*base, "check", "-c", str(config)])
    return {
        "help_median_s": round(statistics.median(help_times), 3),
        "help_min_s": round(min(help_times), 3),
        "check_median_s": round(statistics.median(check_times), 3),
        "check_min_s": round(min(check_times), 3),
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
