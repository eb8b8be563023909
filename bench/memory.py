"""Memory: RSS with 100 watches, and its growth over 10,000 polls.

Runs the daemon in this (fresh) process, as `run` does: the configuration is
checked by apprise first (which loads its plugins), then the daemon polls 20
queries for 100 watches. A compressed clock makes 10,000 polls take about a
minute; every few hundred polls a spec changes, so events, messages and
deliveries happen too. RSS is read from /proc/self/status.
"""

from __future__ import annotations

import gc
import json
import sys
import tempfile
from pathlib import Path

import anyio
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Receiver, rss_mib, simulator, watch, write_config

POLLS = 10_000
WATCHES = 100
QUERIES = 20


async def measure(sim_url: str, workdir: Path, receiver_port: int, polls: int) -> dict[str, float]:
    from monitor.config import load_config
    from monitor.daemon import Daemon, ScaledClock
    from monitor.urls import check_apprise_config, check_url

    watches = "".join(watch(f"w{w}", job_type="train", engine_id=w % QUERIES) for w in range(WATCHES))
    config_path = write_config(
        workdir, sim_url, f"json://127.0.0.1:{receiver_port}/alerts", watches, monitor='interval = "5s"\n'
    )
    config = load_config(config_path, url_checker=check_url, config_checker=check_apprise_config)
    daemon = Daemon(config, clock=ScaledClock(100))
    samples: dict[str, float] = {}
    async with anyio.create_task_group() as tg, httpx.AsyncClient() as control:
        tg.start_soon(daemon.run)
        await daemon.ready.wait()
        flips = 0
        while daemon.cycles < polls:
            await anyio.sleep(0.25)
            if daemon.cycles // 300 > flips:  # now and then a change: events, messages, deliveries
                flips = daemon.cycles // 300
                await control.post(f"{sim_url}/_sim/specs/modelarts.vm.v100.001", json={"no_resource": flips % 2 == 0})
            if "warm" not in samples and daemon.cycles >= 1000:
                gc.collect()
                samples["warm"] = rss_mib()
                samples["warm_polls"] = daemon.cycles
        gc.collect()
        samples["end"] = rss_mib()
        samples["end_polls"] = daemon.cycles
        samples["delivered"] = daemon.delivered
        daemon.stop()
    return {
        "watches": WATCHES,
        "queries": QUERIES,
        "rss_mib_after_1000_polls": round(samples["warm"], 1),
        "rss_mib_after_all": round(samples["end"], 1),
        "polls": samples["end_polls"],
        "growth_mib": round(samples["end"] - samples["warm"], 2),
        "messages_delivered": samples["delivered"],
    }


def run(polls: int = POLLS) -> dict[str, float]:
    receiver = Receiver()
    try:
        with tempfile.TemporaryDirectory() as tmp, simulator(Path(tmp), cpu=1) as url:
            return anyio.run(measure, url, Path(tmp), receiver.server.port, polls)
    finally:
        receiver.close()


if __name__ == "__main__":
    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else POLLS), indent=2))
