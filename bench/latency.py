"""Detection latency: from a capacity change in the simulator to the message at a receiver.

The daemon runs as a real process (`modelarts-monitor run`, interval 5 s,
default jitter) against the simulator process; a local HTTP receiver stands in
for Slack. Each change flips one spec; its latency is the time from the change
to the arrival of the first message that reports that spec in its new state.
Polling sets the floor: a change waits on average half an interval for the
next poll, and at most a whole one (plus the jitter).
"""

from __future__ import annotations

import json
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PYTHON, Receiver, percentile, simulator, watch, write_config

CHANGES = 100
INTERVAL = 5.0
LINE = re.compile(r"\*\*(?P<code>[^*]+)\*\* \([^)]*\): (?:sold out|available) → \*\*(?P<state>available|sold out)\*\*")


def run(changes: int = CHANGES) -> dict[str, float]:
    rng = random.Random(7)
    receiver = Receiver(LINE)
    try:
        with tempfile.TemporaryDirectory() as tmp, simulator(Path(tmp), cpu=1) as sim_url:
            workdir = Path(tmp)
            config = write_config(
                workdir,
                sim_url,
                f"json://127.0.0.1:{receiver.server.port}/alerts",
                watch("gpus", job_type="train"),
                monitor=f'interval = "{INTERVAL:g}s"\n',
            )
            specs = [s for s in httpx.get(sim_url + "/_sim/specs").json()["specs"] if s["gpu_num"]]
            state = {s["spec_code"]: not s["no_resource"] for s in specs}
            last_change = {code: 0.0 for code in state}
            flips = dict.fromkeys(state, 0)
            daemon = subprocess.Popen(
                [PYTHON, "-m", "monitor", "run", "-c", str(config)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                deadline = time.time() + 30
                while receiver.messages < 1:  # the baseline
                    if time.time() > deadline:
                        raise RuntimeError("no baseline from the daemon")
                    time.sleep(0.05)
                made: list[tuple[float, str, str]] = []
                with httpx.Client() as control:
                    while len(made) < changes:
                        time.sleep(rng.expovariate(1 / 0.8))  # changes come at random moments
                        now = time.time()
                        # A spec flipped again within one poll would cancel its own change, and
                        # one flipped more than 4 times within an hour is (rightly) reported as
                        # flapping and then kept quiet: neither would measure latency.
                        ready = [c for c in state if now - last_change[c] > INTERVAL * 1.3 and flips[c] < 4]
                        if not ready:
                            continue
                        code = rng.choice(ready)
                        state[code] = not state[code]
                        t = time.time()
                        control.post(f"{sim_url}/_sim/specs/{code}", json={"no_resource": not state[code]})
                        last_change[code] = t
                        flips[code] += 1
                        made.append((t, code, "available" if state[code] else "sold out"))
                deadline = time.time() + INTERVAL * 3
                latencies: list[float] = []
                while time.time() < deadline:
                    with receiver.lock:
                        arrivals = list(receiver.arrivals)
                    latencies = []
                    for t, code, new in made:
                        first = next((a for a, c, s in arrivals if c == code and s == new and a >= t), None)
                        if first is not None:
                            latencies.append(first - t)
                    if len(latencies) == len(made):
                        break
                    time.sleep(0.1)
            finally:
                daemon.terminate()
                daemon.wait(15)
    finally:
        receiver.close()
    return {
        "changes": len(made),
        "reported": len(latencies),
        "interval_s": INTERVAL,
        "mean_s": statistics.mean(latencies),
        "p50_s": percentile(latencies, 0.5),
        "p95_s": percentile(latencies, 0.95),
        "max_s": max(latencies),
    }


if __name__ == "__main__":
    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else CHANGES), indent=2))
