"""The HTTP endpoint of a running daemon: /healthz, /metrics, the status page, /api/status.

The browser test loads the page of a daemon with a scripted history in headless
Chromium (Debian's package, driven by Playwright) and saves screenshots as test
artifacts; the README's screenshot comes from the same run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from monitor.config import load_config
from monitor.daemon import Clock
from monitor.simulator import Fault

from .conftest import (
    DEMO_SK,
    SLACK_TOKEN,
    SLACK_URL,
    HttpReceiver,
    SimHandle,
    eventually,
    free_port,
    running,
    write_config,
)

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("MODELARTS_MONITOR_ARTIFACTS", ROOT / "artifacts"))
V100 = "modelarts.vm.gpu.v100"


def web_config(
    tmp_path: Path, sim: SimHandle, webhook: HttpReceiver, port: int, monitor: str = "", watches: str = ""
) -> Any:
    return load_config(
        write_config(
            tmp_path,
            sim.url,
            monitor=f'http_listen = "127.0.0.1:{port}"\n{monitor}',
            notifiers=f"""
        [notifiers.hook]
        urls = ["json://127.0.0.1:{webhook.port}/alerts", "{SLACK_URL}"]
        """,
            watches="""
        [[watch]]
        name = "v100-train"
        region = "cn-north-4"
        job_type = "train"
        gpu_types = ["v100"]
        [[watch]]
        name = "ascend-train"
        region = "cn-north-4"
        job_type = "train"
        gpu_types = ["ascend-snt9b"]
        """
            + watches,
        )
    )


async def get(port: int, path: str) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.get(f"http://127.0.0.1:{port}{path}", timeout=10)


async def test_healthz_follows_the_queries(
    tmp_path: Path, sim: SimHandle, webhook: HttpReceiver, slack: HttpReceiver
) -> None:
    port = free_port()
    config = web_config(tmp_path, sim, webhook, port, monitor="failure_alert_after = 2")
    async with running(config) as daemon:
        await eventually(lambda: daemon.cycles >= 1, what="the first poll")
        ok = await get(port, "/healthz")
        assert ok.status_code == 200 and ok.json()["status"] == "ok"
        sim.sim.inject(Fault(status=503, body={"error_code": "APIGW.0202", "error_msg": "down"}), count=-1)
        query = config.watches[0].query
        await daemon.run_cycle(query)
        await daemon.run_cycle(query)
        bad = await get(port, "/healthz")
        assert bad.status_code == 503
        assert "degraded after 2 failed polls: the ModelArts backend is unavailable" in bad.json()["problems"][0]
        sim.sim.clear_faults()
        await daemon.run_cycle(query)
        assert (await get(port, "/healthz")).status_code == 200
    with pytest.raises(httpx.ConnectError):  # the server stopped with the daemon
        await get(port, "/healthz")


async def test_metrics(tmp_path: Path, sim: SimHandle, webhook: HttpReceiver, slack: HttpReceiver) -> None:
    port = free_port()
    config = web_config(tmp_path, sim, webhook, port)
    async with running(config):
        await eventually(lambda: len(webhook.requests) >= 2, what="the baselines delivered")
        text = (await get(port, "/metrics")).text
    labels = 'gpu_type="v100",job_type="train",region="cn-north-4",spec_code="modelarts.vm.gpu.v100",watch="v100-train"'
    assert f"modelarts_spec_available{{{labels}}} 0.0" in text
    assert f"modelarts_spec_max_num{{{labels}}} 4.0" in text
    assert re.search(r'modelarts_polls_total\{[^}]*result="success"\} [1-9]', text)
    assert "modelarts_poll_duration_seconds_bucket{" in text
    assert "modelarts_query_consecutive_failures{" in text
    assert "modelarts_query_last_success_timestamp_seconds{" in text
    assert re.search(r'modelarts_notifications_total\{notifier="hook",result="sent"\} [1-9]', text)
    assert "modelarts_notifications_pending " in text
    assert 'modelarts_build_info{python_version="' in text
    assert SLACK_TOKEN not in text and DEMO_SK not in text
    if shutil.which("promtool"):
        import anyio

        check = await anyio.run_process(["promtool", "check", "metrics"], input=text.encode(), check=False)
        assert check.returncode == 0, check.stdout + check.stderr


async def test_the_status_page_and_its_json(
    tmp_path: Path, sim: SimHandle, webhook: HttpReceiver, slack: HttpReceiver
) -> None:
    port = free_port()
    config = web_config(tmp_path, sim, webhook, port)
    async with running(config) as daemon:
        await eventually(lambda: daemon.cycles >= 1, what="the first poll")
        page = await get(port, "/")
        data = (await get(port, "/api/status")).json()
        missing = await get(port, "/nope")
        async with httpx.AsyncClient() as client:
            post = await client.post(f"http://127.0.0.1:{port}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert '<meta http-equiv="refresh"' in html and "<script" not in html
    assert "v100-train" in html and V100 in html and "ascend-train" in html
    for secret in (SLACK_TOKEN, DEMO_SK, "slack://", "json://", "hooks.slack.com"):
        assert secret not in html and secret not in str(data)
    v100 = next(w for w in data["watches"] if w["name"] == "v100-train")
    spec = next(s for s in v100["specs"] if s["spec_code"] == V100)
    assert spec["available"] is False and spec["timeline_24h"]["segments"]
    assert missing.status_code == 404 and post.status_code == 405


async def test_a_port_in_use_is_a_clear_error(
    tmp_path: Path, sim: SimHandle, webhook: HttpReceiver, slack: HttpReceiver
) -> None:
    import socket

    from monitor.daemon import Daemon
    from monitor.errors import MonitorError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = web_config(tmp_path, sim, webhook, taken.getsockname()[1])
        with pytest.raises(BaseException) as info:
            await Daemon(config).run()
    leaves = list(getattr(info.value, "exceptions", [info.value]))
    assert any(isinstance(e, MonitorError) and "cannot listen on 127.0.0.1" in str(e) for e in leaves)


# -- in a browser ---------------------------------------------------------------------------------------
class FastForward(Clock):
    """Starts a day in the past and runs fast until told to run at real speed."""

    def __init__(self, start: float, scale: float):
        self._t0, self._m0, self.scale = start, time.monotonic(), scale

    def time(self) -> float:
        return self._t0 + (time.monotonic() - self._m0) * self.scale

    def monotonic(self) -> float:
        return self.time()

    def real_speed(self) -> None:
        self._t0, self._m0, self.scale = self.time(), time.monotonic(), 1.0


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.mark.skipif(chromium() is None, reason="Chromium is not installed (CI installs Debian's chromium)")
async def test_the_status_page_in_a_browser(
    tmp_path: Path, sim: SimHandle, webhook: HttpReceiver, slack: HttpReceiver
) -> None:
    from playwright.async_api import async_playwright

    port = free_port()
    # A third watch in a region where the account has no project: degraded at once.
    config = web_config(
        tmp_path,
        sim,
        webhook,
        port,
        watches="""
        [[watch]]
        name = "a100-latam"
        region = "la-south-2"
        job_type = "train"
        gpu_types = ["a100"]
        """,
    )
    day = 86400.0
    clock = FastForward(time.time() - day, 4 * 3600)  # four hours a second
    flips = 5
    async with running(config, clock=clock) as daemon:
        await eventually(lambda: daemon.cycles >= 2, what="the baselines")
        # A scripted day: the V100 comes and goes every four hours; the Ascend never comes.
        for i in range(flips):
            count = sum(1 for _ in sim.sim.records())
            target = clock.time() + 3 * 3600
            await eventually(lambda t=target: clock.time() >= t, timeout=10, what="time to pass")
            sim.sim.set_spec(V100, no_resource=i % 2 == 1)
            await eventually(lambda c=count: len(sim.sim.records()) > c + 2, what="polls seeing the change")
        await eventually(lambda: clock.time() >= time.time(), timeout=10, what="the history to reach now")
        clock.real_speed()
        await daemon.run_cycle(config.watches[0].query)
        import anyio

        await anyio.Path(ARTIFACTS).mkdir(parents=True, exist_ok=True)
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=chromium(),
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                ],
            )
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 800})
                await page.goto(f"http://127.0.0.1:{port}/")
                text = await page.inner_text("body")
                row = page.locator(f"tr.spec:has(td.code:text-is('{V100}'))")
                bar = row.locator("td.t24h rect.seg")
                states = [(await bar.nth(i).get_attribute("class") or "").split()[-1] for i in range(await bar.count())]
                week = await row.locator("td.t7d rect.seg").count()
                badge = await row.locator(".badge").inner_text()
                degraded = await page.locator("section.watch.degraded").all_inner_texts()
                await page.screenshot(path=str(ARTIFACTS / "status-page.png"), full_page=True)
                phone = await browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2)
                await phone.goto(f"http://127.0.0.1:{port}/")
                phone_width = await phone.evaluate("document.documentElement.scrollWidth")
                await phone.screenshot(path=str(ARTIFACTS / "status-page-phone.png"), full_page=True)
            finally:
                await browser.close()
    assert "v100-train" in text and "ascend-train" in text and V100 in text
    assert "modelarts.bm.npu.arm.8snt9b3.d" in text
    assert badge == "available"  # the last flip made it available
    assert len(degraded) == 1 and "a100-latam" in degraded[0] and "IAM knows no project" in degraded[0]
    # Unknown until the first poll (the daemon started a few scaled hours into the day), sold out
    # at the baseline, then five changes: six segments alternating.
    assert states == ["unknown"] + ["sold_out", "available"] * 3, states
    assert week == 7  # the same: "unknown" before monitoring started, then six
    assert phone_width <= 390  # nothing wider than a phone's screen
    assert (ARTIFACTS / "status-page.png").stat().st_size > 10_000


def test_the_readme_alert_rules_are_valid_and_match_the_file() -> None:
    rules = (ROOT / "docs" / "prometheus-rules.yml").read_text()
    assert rules in (ROOT / "README.md").read_text()
    if shutil.which("promtool"):
        check = subprocess.run(
            ["promtool", "check", "rules", str(ROOT / "docs" / "prometheus-rules.yml")], capture_output=True, text=True
        )
        assert check.returncode == 0, check.stdout + check.stderr
