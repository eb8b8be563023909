"""The operator commands, run as a user runs them: once, status, history, test-notify, simulate."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx

from .conftest import (
    MONITOR,
    HttpReceiver,
    SimHandle,
    SmtpSink,
    cli_env,
    free_port,
    hook_config,
    wait_for,
    write_config,
)

V100 = "modelarts.vm.gpu.v100"


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MONITOR, *args], capture_output=True, text=True, env=cli_env(), timeout=timeout)


def config(tmp_path: Path, sim: SimHandle, webhook: HttpReceiver, extra_notifiers: str = "") -> str:
    all_gpus = """
        [[watch]]
        name = "all-gpus"
        region = "cn-north-4"
        job_type = "train"
        """
    return str(hook_config(tmp_path, sim, webhook, extra_notifiers=extra_notifiers, extra_watches=all_gpus))


def test_once_prints_the_watched_specs_without_storing_anything(
    tmp_path: Path, sim: SimHandle, webhook: HttpReceiver
) -> None:
    path = config(tmp_path, sim, webhook)
    proc = run("once", "-c", path)
    assert proc.returncode == 0, proc.stderr
    assert "watch v100" in proc.stdout and V100 in proc.stdout and "sold out" in proc.stdout
    assert "no stored state yet" in proc.stdout
    assert not (tmp_path / "state" / "state.db").exists()
    assert webhook.requests == []


def test_once_json_and_notify_store_and_send_then_report_changes(
    tmp_path: Path, sim: SimHandle, webhook: HttpReceiver
) -> None:
    path = config(tmp_path, sim, webhook)
    first = run("once", "-c", path, "--notify", "--watch", "v100")
    assert first.returncode == 0, first.stderr
    assert len(webhook.wait(1)) == 1
    sim.sim.set_spec(V100, no_resource=False)
    proc = run("once", "-c", path, "--json", "--watch", "v100")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    entry = data["watches"][0]
    assert entry["watch"] == "v100" and entry["first_poll"] is False
    assert [c["kind"] for c in entry["changes"]] == ["available"]
    assert [s["available"] for s in entry["specs"] if s["spec_code"] == V100] == [True]
    assert len(webhook.requests) == 1  # without --notify nothing is sent


def test_once_rejects_an_unknown_watch(tmp_path: Path, sim: SimHandle, webhook: HttpReceiver) -> None:
    proc = run("once", "-c", config(tmp_path, sim, webhook), "--watch", "nope")
    assert proc.returncode == 64 and "no watch named nope" in proc.stderr


def test_once_reports_a_failed_poll(tmp_path: Path, sim: SimHandle, webhook: HttpReceiver) -> None:
    path = write_config(
        tmp_path,
        sim.url,
        account="",
        notifiers=f"""
        [notifiers.hook]
        urls = ["json://127.0.0.1:{webhook.port}/alerts"]
        """,
        watches="""
        [[watch]]
        name = "v100"
        region = "cn-north-4"
        job_type = "train"
        """,
    )
    text = path.read_text().replace('secret_key = "', 'secret_key = "WRONG')
    path.write_text(text)
    proc = run("once", "-c", str(path))
    assert proc.returncode == 1
    assert "poll failed: authentication rejected" in proc.stdout
    assert "WRONG" not in proc.stdout + proc.stderr


def test_status_and_history_read_what_the_daemon_stored(tmp_path: Path, sim: SimHandle, webhook: HttpReceiver) -> None:
    path = config(tmp_path, sim, webhook)
    assert run("once", "-c", path, "--notify").returncode == 0
    sim.sim.set_spec(V100, no_resource=False)
    assert run("once", "-c", path, "--notify").returncode == 0
    status = run("status", "-c", path)
    assert status.returncode == 0, status.stderr
    assert "watch v100  [ok]" in status.stdout and V100 in status.stdout and "available" in status.stdout
    data = json.loads(run("status", "-c", path, "--json").stdout)
    v100 = next(w for w in data["watches"] if w["name"] == "v100")
    assert [s["available"] for s in v100["specs"] if s["spec_code"] == V100] == [True]
    history = run("history", "-c", path, "--watch", "v100")
    assert history.returncode == 0
    lines = history.stdout.splitlines()
    assert "baseline" in lines[0] and "available" in lines[1] and V100 in lines[1]
    events = json.loads(run("history", "-c", path, "--json", "--since", "1h").stdout)["events"]
    assert sorted(e["kind"] for e in events) == ["available", "available", "baseline", "baseline"]


def test_status_before_any_run_says_so(tmp_path: Path, sim: SimHandle, webhook: HttpReceiver) -> None:
    proc = run("status", "-c", config(tmp_path, sim, webhook))
    assert proc.returncode == 0 and "no state yet" in proc.stdout


def test_test_notify_reports_each_url(tmp_path: Path, sim: SimHandle, webhook: HttpReceiver, smtp: SmtpSink) -> None:
    dead = free_port()
    path = config(
        tmp_path,
        sim,
        webhook,
        extra_notifiers=f"""
        [notifiers.mail]
        urls = ["{smtp.url}", "mailto://bob:pa55word99@127.0.0.1:{dead}?mode=insecure&from=m@example.com&to=x@example.com&cto=2"]
        """,
    )
    proc = run("test-notify", "-c", path)
    assert proc.returncode == 1
    assert f"hook: json://127.0.0.1:{webhook.port}/alerts: sent" in proc.stdout
    assert "mail: mailto://bob:***@127.0.0.1" in proc.stdout and "FAILED" in proc.stdout
    assert "pa55word99" not in proc.stdout + proc.stderr
    assert webhook.wait(1)[0]["title"].startswith("modelarts-monitor test message")
    assert "test message" in smtp.wait(1)[0]["Subject"]
    only = run("test-notify", "-c", path, "--notifier", "hook")
    assert only.returncode == 0 and "mail" not in only.stdout
    assert run("test-notify", "-c", path, "--notifier", "nope").returncode == 64


def test_simulate_serves_the_api(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [*MONITOR, "simulate", "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    try:

        def answer() -> httpx.Response | None:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/_sim/specs", timeout=2)
            except httpx.HTTPError:
                return None

        response = wait_for(answer, 15, "the simulator to answer")
        assert len(response.json()["specs"]) == 5
        unsigned = httpx.get(f"http://127.0.0.1:{port}/v1/x/job/resource-specs", timeout=2)
        assert unsigned.status_code == 401 and unsigned.json()["error_code"] == "APIGW.0301"
        proc.terminate()
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            assert stream is not None
            stream.close()


def test_simulate_rejects_a_bad_listen_address() -> None:
    assert run("simulate", "--listen", "nowhere").returncode == 64


def test_check_online_gives_a_verdict_per_account(tmp_path: Path, sim: SimHandle, webhook: HttpReceiver) -> None:
    path = config(tmp_path, sim, webhook)
    good = run("check", "--online", "-c", path)
    assert good.returncode == 0, good.stderr
    assert "account sim, region cn-north-4: OK: authenticated (aksk)" in good.stdout
    assert "all 1 account/region check(s) passed" in good.stdout
    Path(path).write_text(Path(path).read_text().replace('secret_key = "', 'secret_key = "x'))
    bad = run("check", "--online", "-c", path)
    assert bad.returncode == 1
    assert "account sim, region cn-north-4: FAILED: authentication rejected" in bad.stdout


def test_check_online_tries_every_region_the_watches_use(tmp_path: Path, sim: SimHandle, webhook: HttpReceiver) -> None:
    elsewhere = """
        [[watch]]
        name = "nowhere"
        region = "xx-nowhere-1"
        job_type = "train"
        """
    path = hook_config(tmp_path, sim, webhook, extra_watches=elsewhere)
    proc = run("check", "--online", "-c", str(path))
    assert proc.returncode == 1
    assert "account sim, region cn-north-4: OK" in proc.stdout
    assert "account sim, region xx-nowhere-1: FAILED: IAM knows no project named 'xx-nowhere-1'" in proc.stdout
