"""Overhead ratio: the monitor's whole CPU cost per poll next to a bare httpx GET + JSON decode.

Both run in this process against the same simulator process, in interleaved
blocks, and the ratio is taken per block pair, so machine noise hits both
sides alike. The monitor side is Daemon.run_cycle (sign, request, parse, diff,
store) plus the scheduling step; no change happens, so nothing is sent.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import AK, PROJECT, SK, percentile, simulator, watch, write_config

from monitor.api import signer
from monitor.config import load_config
from monitor.daemon import Daemon
from monitor.schedule import next_poll

BLOCK = 300
BLOCKS = 10


async def measure(sim_url: str, workdir: Path, vary: str = "") -> dict[str, float]:
    config_path = write_config(
        workdir, sim_url, "json://127.0.0.1:9/never", watch("gpus", job_type="train", min_gpu_num=0, notify=[])
    )
    config = load_config(config_path)
    query = config.watches[0].query
    daemon = Daemon(config)
    # The bare side: the same answer, with headers signed once (valid for 15 minutes).
    path = f"/v1/{PROJECT}/job/resource-specs"
    params = [("engine_id", "0"), ("job_type", "train"), ("project_type", "0")]
    signed = signer.sign(
        method="GET", url=sim_url + path, params=params, headers={"X-Project-Id": PROJECT}, access_key=AK, secret_key=SK
    )
    rng = random.Random(1)
    async with httpx.AsyncClient() as control:
        await control.post(sim_url + "/_sim/vary", json={"mode": vary})
    async with anyio.create_task_group() as tg:
        tg.start_soon(daemon.run)
        await daemon.ready.wait()
        for rt in daemon.runtimes.values():  # the bench drives polls itself
            if rt.scope is not None:
                rt.scope.cancel()
        async with httpx.AsyncClient() as bare:
            specs = len(json.loads((await bare.get(signed.url, headers=signed.headers)).content)["specs"])

            async def bare_poll() -> None:
                response = await bare.get(signed.url, headers=signed.headers)
                json.loads(response.content)

            async def monitor_poll() -> None:
                result = await daemon.run_cycle(query)
                assert result is not None and result.error is None, result
                next_poll(0.0, 60.0, 0.1, 1.0, rng)

            for _ in range(20):  # warm up both paths
                await bare_poll()
                await monitor_poll()
            ratios, bare_costs, monitor_costs = [], [], []
            for _ in range(BLOCKS):
                t = time.process_time()
                for _ in range(BLOCK):
                    await bare_poll()
                bare_cost = (time.process_time() - t) / BLOCK
                t = time.process_time()
                for _ in range(BLOCK):
                    await monitor_poll()
                monitor_cost = (time.process_time() - t) / BLOCK
                bare_costs.append(bare_cost)
                monitor_costs.append(monitor_cost)
                ratios.append(monitor_cost / bare_cost)
        daemon.stop()
    return {
        "specs": specs,
        "bare_ms": statistics.median(bare_costs) * 1000,
        "monitor_ms": statistics.median(monitor_costs) * 1000,
        "ratio": statistics.median(ratios),
        "ratio_p90": percentile(ratios, 0.9),
    }


def run() -> dict[str, dict[str, float]]:
    """Three cases: answers repeat byte for byte (the usual case), differ in bytes only, or
    carry a changed catalog every time (every poll then stores a new snapshot)."""
    results = {}
    for vary in ("", "bytes", "catalog"):
        with tempfile.TemporaryDirectory() as tmp, simulator(Path(tmp), cpu=1) as url:
            results[vary or "same"] = anyio.run(measure, url, Path(tmp), vary)
    return results


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
