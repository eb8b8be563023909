"""Shared pieces of the benchmarks: a simulator process, scenarios, configs, process stats."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
AK = "DEMOACCESSKEY0000001"
SK = "demo-secret-key-0123456789abcdef"
PROJECT = "0123456789abcdef0123456789abcdef"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scenario(path: Path, specs: int = 50) -> Path:
    """A catalog of ``specs`` specs (about what a real region lists), no timeline."""
    lines = [
        f'[[accounts]]\naccess_key = "{AK}"\nsecret_key = "{SK}"\n',
        f'[[projects]]\nid = "{PROJECT}"\nname = "cn-north-4"\n',
    ]
    gpus = ["v100", "a100", "t4", "p100", "ascend-snt9b"]
    for i in range(specs):
        gpu = gpus[i % len(gpus)] if i % 10 else ""
        num = [1, 2, 4, 8][i % 4] if gpu else 0
        lines.append(
            textwrap.dedent(f"""\
            [[specs]]
            spec_code = "modelarts.vm.{gpu or "cpu"}.{i:03d}"
            gpu_type = "{gpu}"
            gpu_num = {num}
            core = "{8 * (num or 1)}"
            cpu = "{64 * (num or 1)}"
            max_num = {1 + i % 16}
            no_resource = {"true" if i % 3 else "false"}
            """)
        )
    path.write_text("\n".join(lines))
    return path


@contextmanager
def simulator(workdir: Path, *, cpu: int | None = None, specs: int = 50) -> Iterator[str]:
    """`modelarts-monitor simulate` in its own process (optionally pinned to one CPU)."""
    port = free_port()
    cmd = [
        PYTHON,
        "-m",
        "monitor",
        "simulate",
        "--listen",
        f"127.0.0.1:{port}",
        "--scenario",
        str(scenario(workdir / "scenario.toml", specs)),
    ]
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        cmd = ["taskset", "-c", str(cpu), *cmd]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(url + "/_sim/specs", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the simulator did not start") from None
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def rss_mib(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


class Receiver:
    """A json:// receiver in a thread: notes when each (spec, new state) first arrives."""

    def __init__(self, line: re.Pattern[str] | None = None) -> None:
        from anyio.from_thread import start_blocking_portal

        from monitor.httpserver import HttpServer, Response

        self.arrivals: list[tuple[float, str, str]] = []
        self.messages = 0
        self.lock = threading.Lock()

        async def handle(request: Any) -> Any:
            now = time.time()
            body = json.loads(request.body)
            with self.lock:
                self.messages += 1
                for m in line.finditer(body.get("message", "")) if line else ():
                    self.arrivals.append((now, m["code"], m["state"]))
            return Response.text("ok")

        self._cm = start_blocking_portal()
        self.portal = self._cm.__enter__()
        self.server = HttpServer(handle)
        self.portal.start_task_soon(self.server.serve)
        while self.server.port == 0:
            time.sleep(0.01)

    def close(self) -> None:
        self.portal.call(self.portal.stop, True)  # cancel the server
        self._cm.__exit__(None, None, None)


def write_config(workdir: Path, sim_url: str, receiver_url: str, watches: str, monitor: str = "") -> Path:
    """A configuration for the simulator's account, one notifier, and the given [[watch]] tables."""
    path = workdir / "config.toml"
    path.write_text(
        textwrap.dedent(f"""\
            [monitor]
            state_dir = "{workdir / "state"}"
            log_level = "warning"
            """)
        + textwrap.dedent(monitor)
        + textwrap.dedent(f"""
            [accounts.sim]
            access_key = "{AK}"
            secret_key = "{SK}"
            endpoint = "{sim_url}"
            iam_endpoint = "{sim_url}"

            [notifiers.receiver]
            urls = ["{receiver_url}"]

            """)
        + textwrap.dedent(watches)
    )
    path.chmod(0o600)
    return path


def watch(name: str, **keys: object) -> str:
    """One [[watch]] table in the simulator's region and project."""
    lines = [f'[[watch]]\nname = "{name}"\nregion = "cn-north-4"\nproject_id = "{PROJECT}"']
    lines += [f"{k} = {json.dumps(v)}" for k, v in keys.items()]
    return "\n".join(lines) + "\n\n"
