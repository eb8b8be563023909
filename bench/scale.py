"""Scale: 1,000 watches over 200 distinct queries, a 10 s interval, one core, five minutes.

The daemon runs as a real process pinned to CPU 0 and the simulator to CPU 1
(taskset), so the daemon's CPU share is of one core. Measured over the steady
window after the start-up burst (1,000 baselines delivered):

- requests per query per cycle, from the simulator's own request log;
- the daemon's CPU share of one core, from /proc;
- schedule drift (how late each poll starts against its schedule), from the
  daemon's modelarts_schedule_lag_seconds histogram on /metrics;
- backlog: drift in the first and second half of the window, and the outbox.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PYTHON, Receiver, free_port, process_cpu, simulator, watch, write_config

WATCHES = 1000
QUERIES = 200
INTERVAL = 10.0


def watches() -> str:
    filters: list[dict[str, object]] = [{"gpu_types": [g]} for g in ("v100", "a100", "t4", "p100")] + [{}]
    tables = []
    for q in range(QUERIES):
        job_type, engine = ("train", "inference")[q % 2], q // 2
        for i in range(WATCHES // QUERIES):
            tables.append(watch(f"q{q:03d}-w{i}", job_type=job_type, engine_id=engine, **filters[i % len(filters)]))
    return "".join(tables)


def histogram(text: str, name: str) -> dict[float, float]:
    buckets = {}
    for m in re.finditer(rf'^{name}_bucket\{{le="([^"]+)"\}} (\S+)$', text, re.M):
        buckets[float(m[1])] = float(m[2])
    return buckets


def quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """Upper bound of the bucket holding quantile q of the observations between two scrapes."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if total and count >= q * total:
            return bound
    return float("inf")


def metric(text: str, name: str) -> float:
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(m[1]) if m else float("nan")


def run(seconds: float = 300.0) -> dict[str, float]:
    receiver = Receiver()
    try:
        with tempfile.TemporaryDirectory() as tmp, simulator(Path(tmp), cpu=1) as sim_url:
            workdir = Path(tmp)
            web_port = free_port()
            monitor = (
                f'interval = "{INTERVAL:g}s"\ntimeout = "10s"\nmax_concurrency = 8\n'
                f'http_listen = "127.0.0.1:{web_port}"\n'
            )
            config = write_config(
                workdir, sim_url, f"json://127.0.0.1:{receiver.server.port}/alerts", watches(), monitor=monitor
            )
            daemon = subprocess.Popen(
                ["taskset", "-c", "0", PYTHON, "-m", "monitor", "run", "-c", str(config)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            metrics_url = f"http://127.0.0.1:{web_port}/metrics"
            try:
                started = time.time()
                while receiver.messages < WATCHES:  # the start-up burst: a baseline per watch
                    if time.time() - started > 120 or daemon.poll() is not None:
                        raise RuntimeError(f"only {receiver.messages} baselines; daemon: {daemon.poll()}")
                    time.sleep(0.2)
                time.sleep(INTERVAL)  # one more cycle before measuring
                t0, cpu0, m0 = time.time(), process_cpu(daemon.pid), httpx.get(metrics_url).text
                time.sleep(seconds / 2)
                m_mid = httpx.get(metrics_url).text
                time.sleep(seconds / 2)
                t1, cpu1, m1 = time.time(), process_cpu(daemon.pid), httpx.get(metrics_url).text
                records = httpx.get(sim_url + "/_sim/requests", timeout=30).json()["requests"]
            finally:
                daemon.terminate()
                daemon.wait(30)
    finally:
        receiver.close()
    per_query: dict[str, list[float]] = defaultdict(list)
    for r in records:
        if "resource-specs" in r["path"] and t0 <= r["at"] <= t1:
            per_query[r["query"]].append(r["at"])
    cycles = (t1 - t0) / INTERVAL
    counts = [len(v) for v in per_query.values()]
    gaps = [b - a for times in per_query.values() for a, b in zip(sorted(times), sorted(times)[1:], strict=False)]
    lag = "modelarts_schedule_lag_seconds"
    return {
        "window_s": round(t1 - t0),
        "queries_polled": len(per_query),
        "cycles": round(cycles, 1),
        "requests_per_query_min": min(counts),
        "requests_per_query_max": max(counts),
        "min_gap_s": round(min(gaps), 2),
        "max_gap_s": round(max(gaps), 2),
        "cpu_percent_of_one_core": round(100 * (cpu1 - cpu0) / (t1 - t0), 1),
        "drift_p99_s": quantile(histogram(m0, lag), histogram(m1, lag), 0.99),
        "drift_p99_first_half_s": quantile(histogram(m0, lag), histogram(m_mid, lag), 0.99),
        "drift_p99_second_half_s": quantile(histogram(m_mid, lag), histogram(m1, lag), 0.99),
        "outbox_pending_end": metric(m1, "modelarts_notifications_pending"),
    }


if __name__ == "__main__":
    print(json.dumps(run(float(sys.argv[1]) if len(sys.argv) > 1 else 300.0), indent=2))
