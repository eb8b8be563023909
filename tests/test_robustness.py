"""Bad input found by trying to break the monitor: each case once broke it, and must not again."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from monitor import redact
from monitor.config import load_config
from monitor.detect import QueryHealth, process_poll
from monitor.errors import PollError
from monitor.model import Snapshot, Spec
from monitor.schedule import poll_backoff
from monitor.simulator import Fault

from .conftest import (
    MONITOR,
    HttpReceiver,
    SimHandle,
    cli_env,
    eventually,
    hook_config,
    running,
    wait_for,
    write_config,
)
from .test_process import Process

V100 = "modelarts.vm.gpu.v100"


def v100_config(tmp_path: Path, sim: SimHandle, webhook: HttpReceiver, *, notifier: str = "") -> Path:
    return hook_config(tmp_path, sim, webhook, url_suffix=notifier)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MONITOR, *args], capture_output=True, text=True, env=cli_env(), timeout=60)


# -- the daemon keeps running -----------------------------------------------------------------------------
def test_a_reload_that_replaces_an_account_mid_poll_keeps_the_daemon_running(
    tmp_path: Path, sim: SimHandle, webhook: HttpReceiver
) -> None:
    path = v100_config(tmp_path, sim, webhook)
    daemon = Process([*MONITOR, "run", "-c", str(path)])
    try:
        webhook.wait(1)
        sim.sim.inject(Fault(delay=3))  # the next poll is in flight for 3 s
        polls = len(sim.sim.records())
        wait_for(lambda: len(sim.sim.records("")) >= 0 and daemon.collect() is not None, 1, "nothing")
        path.write_text(path.read_text().replace(f'iam_endpoint = "{sim.url}"', f'iam_endpoint = "{sim.url}/"'))
        time.sleep(0)  # (no wait needed: the reload below races the slow poll on purpose)
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_line("configuration reloaded", 10)
        wait_for(lambda: len(sim.sim.records()) >= polls + 2, 30, "polls after the reload")
        assert daemon.proc.poll() is None
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    assert "unexpected" not in "\n".join(daemon.lines).lower()


@pytest.mark.parametrize("value", ["\u00b2", "\u0663", "-5", "soon", "Wed, 99 Foo 2026 99:99:99 GMT", ""])
def test_an_odd_retry_after_header_is_ignored(value: str) -> None:
    from monitor.api.client import _retry_after

    assert _retry_after(value, time.time()) is None


def test_backoff_after_very_many_failures_stays_finite() -> None:
    rng = random.Random(1)
    for category in ("transient", "permanent", "account", "credentials"):
        assert poll_backoff(10_000, category, 60, None, rng) <= 30 * 60 * 1.1


def test_a_second_stop_signal_stops_at_once_and_cleanly(tmp_path: Path, sim: SimHandle, webhook: HttpReceiver) -> None:
    daemon = Process([*MONITOR, "run", "-c", str(v100_config(tmp_path, sim, webhook))])
    try:
        webhook.wait(1)
        webhook.hang = True  # a delivery that would hold the stop for its whole grace period
        sim.sim.set_spec(V100, no_resource=False)
        wait_for(lambda: any(f"v100: available {V100}" in line for line in daemon.collect()), 20, "the change")
        daemon.proc.send_signal(signal.SIGTERM)
        daemon.wait_line("stopping", 10)
        started = time.monotonic()
        status = daemon.stop(signal.SIGTERM)
        assert status == 0, "\n".join(daemon.collect())
        assert time.monotonic() - started < 8
    finally:
        daemon.kill()


def test_a_reload_request_during_start_up_is_not_fatal(tmp_path: Path, sim: SimHandle, webhook: HttpReceiver) -> None:
    path = v100_config(tmp_path, sim, webhook)
    daemon = Process([*MONITOR, "run", "-c", str(path)])
    try:
        # The database opens before the daemon listens for signals: a reload request sent now
        # (as `systemctl reload` right after a start could) must not kill it.
        wait_for(lambda: (tmp_path / "state" / "state.db").exists(), 20, "the database")
        daemon.proc.send_signal(signal.SIGHUP)
        webhook.wait(1)
        assert daemon.proc.poll() is None
        assert daemon.stop() == 0
    finally:
        daemon.kill()


def test_two_daemons_on_one_state_directory_refuse(tmp_path: Path, sim: SimHandle, webhook: HttpReceiver) -> None:
    path = v100_config(tmp_path, sim, webhook)
    first = Process([*MONITOR, "run", "-c", str(path)])
    try:
        webhook.wait(1)
        second = run_cli("run", "-c", str(path))
        assert second.returncode == 1
        assert "already using the state directory" in second.stderr
        once = run_cli("once", "--notify", "-c", str(path))
        assert once.returncode == 1 and "already using the state directory" in once.stderr
        assert first.stop() == 0
    finally:
        first.kill()
    assert len(webhook.requests) == 1


@pytest.mark.anyio
async def test_a_rotated_notifier_url_still_gets_what_was_waiting(
    tmp_path: Path, sim: SimHandle, webhook: HttpReceiver
) -> None:
    """The outbox names a URL by notifier and position, so a new token takes over its queue."""
    from monitor.daemon import ScaledClock

    webhook.status = 500
    path = v100_config(tmp_path, sim, webhook, notifier="-OLDTOKEN11")
    async with running(load_config(path), clock=ScaledClock(60)) as daemon:
        await eventually(lambda: daemon.delivery_failures >= 1, what="a failed delivery")
        webhook.status = 200
        path.write_text(path.read_text().replace("OLDTOKEN11", "NEWTOKEN22"))
        assert await daemon.reload_from_file()
        await eventually(lambda: len(webhook.requests) >= 1, timeout=20, what="the delivery to the new URL")
    assert webhook.requests[0].target == "/alerts-NEWTOKEN22"
    assert daemon.dropped == 0


# -- never a false alert -----------------------------------------------------------------------------------
def test_empty_answers_between_failures_are_not_believed() -> None:
    """ "Three in a row": a failed poll in between starts the count again."""
    from monitor.config import Watch

    w = Watch(name="w", account="a", region="r")
    spec = Spec("x", "x", False, 1, 1, "v100")
    now = 1000.0
    result = process_poll([w], QueryHealth(), None, {"w": None}, Snapshot(now, (spec,)), now, failure_alert_after=99)
    health, snapshot, states = result.health, result.snapshot, dict(result.states)
    for i in range(8):
        now += 60
        outcome: Snapshot | PollError = Snapshot(now, ()) if i % 2 == 0 else PollError("503")
        result = process_poll([w], health, snapshot, states, outcome, now, failure_alert_after=99)
        assert result.error is not None and result.snapshot is None, i
        health = result.health


# -- configuration that used to pass `check` and fail later ------------------------------------------------
@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ('[monitor]\nheartbeat_url = "http://127.0.0.1:99999/ping"', "monitor.heartbeat_url: is not a valid URL"),
        ('[monitor]\nheartbeat_url = "http://[::1/ping"', "monitor.heartbeat_url: is not a valid URL"),
        ('[monitor]\ninterval = "99999999999w"', "monitor.interval: must be at most 1 d"),
        ("[monitor]\nfailure_alert_after = 100000", "monitor.failure_alert_after: must be at most 1000"),
    ],
)
def test_values_that_cannot_work_are_configuration_errors(tmp_path: Path, setting: str, expected: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[accounts.a]\naccess_key = "akak"\nsecret_key = "sksk"\n[notifiers.n]\nurls = ["json://127.0.0.1:9/x"]\n'
        '[[watch]]\nname = "w"\nregion = "cn-north-4"\n' + setting + "\n"
    )
    path.chmod(0o600)
    proc = run_cli("check", "-c", str(path))
    assert proc.returncode == 78 and expected in proc.stderr, proc.stderr


def test_a_ca_bundle_that_is_no_certificate_is_a_configuration_error(tmp_path: Path) -> None:
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate\n")
    path = tmp_path / "c.toml"
    path.write_text(
        f'[accounts.a]\naccess_key = "akak"\nsecret_key = "sksk"\nca_bundle = "{bogus}"\n'
        '[notifiers.n]\nurls = ["json://127.0.0.1:9/x"]\n[[watch]]\nname = "w"\nregion = "cn-north-4"\n'
    )
    path.chmod(0o600)
    proc = run_cli("check", "-c", str(path))
    assert proc.returncode == 78 and "accounts.a.ca_bundle" in proc.stderr and "holds no PEM certificate" in proc.stderr


def test_an_apprise_config_file_that_holds_nothing_is_a_configuration_error(tmp_path: Path) -> None:
    junk = tmp_path / "apprise.yml"
    junk.write_text("this is not an apprise configuration\n")
    path = tmp_path / "c.toml"
    path.write_text(
        '[accounts.a]\naccess_key = "akak"\nsecret_key = "sksk"\n'
        f'[notifiers.n]\nconfig = "{junk}"\n[[watch]]\nname = "w"\nregion = "cn-north-4"\n'
    )
    path.chmod(0o600)
    proc = run_cli("check", "-c", str(path))
    assert proc.returncode == 78 and "notifiers.n.config" in proc.stderr


def test_a_fifo_or_device_is_never_read(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert run_cli("check", "-c", str(fifo)).returncode == 78
    path = tmp_path / "c.toml"
    path.write_text(
        f'[accounts.a]\naccess_key = "akak"\nsecret_key = "file:{fifo}"\n'
        '[notifiers.n]\nurls = ["json://127.0.0.1:9/x"]\n[[watch]]\nname = "w"\nregion = "cn-north-4"\n'
    )
    path.chmod(0o600)
    proc = run_cli("check", "-c", str(path))
    assert proc.returncode == 78 and "not a regular file" in proc.stderr
    path.write_text(path.read_text().replace(str(fifo), "/dev/zero"))
    assert run_cli("check", "-c", str(path)).returncode == 78


def test_a_two_line_secret_file_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "sk"
    secret.write_text("the-key\nsomething else\n")
    path = tmp_path / "c.toml"
    path.write_text(
        f'[accounts.a]\naccess_key = "akak"\nsecret_key = "file:{secret}"\n'
        '[notifiers.n]\nurls = ["json://127.0.0.1:9/x"]\n[[watch]]\nname = "w"\nregion = "cn-north-4"\n'
    )
    path.chmod(0o600)
    proc = run_cli("check", "-c", str(path))
    assert proc.returncode == 78 and "holds more than one line" in proc.stderr


@pytest.mark.parametrize(
    ("args", "words"),
    [(["--bogus"], "unrecognized option --bogus"), (["check", "-c", ""], "--config: the path is empty")],
)
def test_bad_command_lines_say_what_is_wrong(args: list[str], words: str) -> None:
    proc = run_cli(*args)
    assert proc.returncode == 64 and words in proc.stderr


def test_a_damaged_record_in_the_database_is_a_clear_error(
    tmp_path: Path, sim: SimHandle, webhook: HttpReceiver
) -> None:
    path = v100_config(tmp_path, sim, webhook)
    assert run_cli("once", "--notify", "-c", str(path)).returncode == 0
    conn = sqlite3.connect(tmp_path / "state" / "state.db")
    conn.execute("UPDATE watch_state SET state = 'not json'")
    conn.commit()
    conn.close()
    for command in (["status"], ["once"], ["run"]):
        proc = run_cli(*command, "-c", str(path))
        assert proc.returncode == 1, command
        assert "damaged record" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


# -- secrets ------------------------------------------------------------------------------------------------
def test_a_token_in_a_url_host_is_masked() -> None:
    assert redact.mask_url("slack://SECRETA") == "slack://***"
    assert redact.mask_url("tgram://123456789:AAbbCCddEE/987654") == "***"  # not even the scheme's shape
    assert redact.mask_url("json://localhost:9911/slack") == "json://localhost:9911/slack"
    assert redact.mask_url("mailtos://me:pw@smtp.example.com:587") == "mailtos://me:***@smtp.example.com:587"


def test_an_echoed_secret_never_leaves_in_a_poll_error() -> None:
    redact.register("echoed-secret-key-123")
    error = PollError(
        "malformed answer: an HTML page ('<p>echoed-secret-key-123</p>')", request_id="id-echoed-secret-key-123"
    )
    assert "echoed-secret-key-123" not in error.describe()


# -- found in a second round ----------------------------------------------------------------------------------
@pytest.mark.parametrize("code", ["x\ud800", "a\n2026-12-03 18:00:00 error   FAKE LINE", "tab\there"])
def test_a_spec_code_with_control_or_invalid_characters_is_a_failed_poll(code: str) -> None:
    import json

    from monitor.catalog import JobSpecCatalog

    body = json.dumps(
        {
            "is_success": True,
            "specs": [{"spec_code": code, "no_resource": False, "max_num": 1, "gpu_num": 1, "gpu_type": "v100"}],
        }
    )
    with pytest.raises(PollError, match="control or invalid characters"):
        JobSpecCatalog.parse(body.encode(), 0.0)


def test_an_error_message_with_a_lone_surrogate_does_not_stop_the_daemon(
    tmp_path: Path, sim: SimHandle, webhook: HttpReceiver
) -> None:
    path = v100_config(tmp_path, sim, webhook)
    sim.sim.inject(
        Fault(status=500, body='{"error_code": "ModelArts.0010", "error_msg": "bad \\\\ud800 thing"}'), count=-1
    )
    proc = run_cli("once", "--notify", "-c", str(path))
    assert proc.returncode == 1 and "ModelArts internal error" in proc.stdout, proc.stdout + proc.stderr
    assert "unexpected" not in proc.stderr


@pytest.mark.anyio
async def test_each_url_of_an_apprise_config_file_is_its_own_delivery(
    tmp_path: Path, sim: SimHandle, webhook: HttpReceiver
) -> None:
    from monitor.daemon import ScaledClock

    apprise_file = tmp_path / "apprise.yml"
    apprise_file.write_text(
        "urls:\n"
        "  - json://127.0.0.1:9/dead:\n      tag: gpu\n"
        f"  - json://127.0.0.1:{webhook.port}/hook/ConfTok3nSecret:\n      tag: gpu\n"
        "  - json://127.0.0.1:9/other:\n      tag: other\n"
    )
    path = write_config(
        tmp_path,
        sim.url,
        notifiers=f"""
        [notifiers.file]
        config = "{apprise_file}"
        tag = "gpu"
        """,
        watches="""
        [[watch]]
        name = "v100"
        region = "cn-north-4"
        job_type = "train"
        gpu_types = ["v100"]
        """,
    )
    async with running(load_config(path), clock=ScaledClock(60)) as daemon:
        await eventually(lambda: len(webhook.requests) >= 1, what="the baseline at the live URL")
        await eventually(lambda: daemon.delivery_failures >= 3, timeout=20, what="retries to the dead URL")
        targets = daemon.notifier.targets(["file"])
    assert len(webhook.requests) == 1  # the working URL got it once, whatever the dead one did
    assert [t.url_key for t in targets] == ["file#config0", "file#config1"]  # the "other" tag is left out
    assert all("ConfTok3nSecret" not in t.url_label for t in targets)
    assert redact.redact("see /hook/ConfTok3nSecret") == "see /hook/***"


@pytest.mark.anyio
async def test_a_stop_during_a_backlog_leaves_nothing_to_send_twice(
    tmp_path: Path, sim: SimHandle, webhook: HttpReceiver
) -> None:
    from monitor.store import StateReader

    webhook.delay = 0.3
    many = "".join(f'[[watch]]\nname = "w{i}"\nregion = "cn-north-4"\njob_type = "train"\n' for i in range(60))
    path = write_config(
        tmp_path,
        sim.url,
        notifiers=f"""
        [notifiers.hook]
        urls = ["json://127.0.0.1:{webhook.port}/alerts"]
        """,
        watches=many,
    )
    async with running(load_config(path)) as daemon:
        await eventually(lambda: daemon.cycles >= 1 and len(webhook.requests) >= 1, what="the backlog to start")
    # Stopped with a backlog: whatever reached the receiver was recorded as sent.
    reader = StateReader.open(tmp_path / "state")
    assert reader is not None
    try:
        sent = reader.outbox_summary()
    finally:
        reader.close()
    assert sum(counts.get("sent", 0) for counts in sent.values()) == len(webhook.requests)


def test_a_state_dir_with_odd_characters_is_read_back(tmp_path: Path, sim: SimHandle, webhook: HttpReceiver) -> None:
    path = v100_config(tmp_path, sim, webhook)
    odd = tmp_path / "st#1 ?x %20"
    path.write_text(path.read_text().replace(f'state_dir = "{tmp_path / "state"}"', f'state_dir = "{odd}"'))
    assert run_cli("once", "--notify", "-c", str(path)).returncode == 0
    status = run_cli("status", "--json", "-c", str(path))
    assert status.returncode == 0, status.stderr
    assert not (tmp_path / "st").exists()


def test_a_short_secret_never_garbles_json_output(tmp_path: Path, sim: SimHandle, webhook: HttpReceiver) -> None:
    import json

    path = v100_config(tmp_path, sim, webhook)
    path.write_text(path.read_text().replace('urls = ["json://', 'urls = ["json://user:1796@127.0.0.1:9/x", "json://'))
    assert run_cli("once", "--notify", "-c", str(path)).returncode in (0, 1)
    for args in (["status", "--json"], ["history", "--json"], ["once", "--json"]):
        proc = run_cli(*args, "-c", str(path))
        json.loads(proc.stdout)  # still JSON


@pytest.mark.anyio
async def test_a_reload_keeps_the_state_dir_and_applies_the_timeout(
    tmp_path: Path, sim: SimHandle, webhook: HttpReceiver
) -> None:
    path = v100_config(tmp_path, sim, webhook)
    async with running(load_config(path)) as daemon:
        path.write_text(
            path.read_text()
            .replace(f'state_dir = "{tmp_path / "state"}"', f'state_dir = "{tmp_path / "elsewhere"}"')
            .replace('timeout = "5s"', 'timeout = "2s"')
        )
        assert await daemon.reload_from_file()
        assert daemon.config.monitor.state_dir == tmp_path / "state"
        assert daemon.clients["sim"].timeout == 2.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a = " + "[" * 2000, "nested too deeply"),
        ('[monitor]\nhttp_listen = "http://127.0.0.1:9464"', "monitor.http_listen"),
    ],
)
def test_more_configuration_that_is_rejected_clearly(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text + "\n")
    path.chmod(0o600)
    proc = run_cli("check", "-c", str(path))
    assert proc.returncode == 78 and expected in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_demo_keep_never_overwrites_another_configuration(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("# my own\n")
    proc = run_cli("demo", "--keep", str(tmp_path), "--duration", "1s")
    assert proc.returncode == 64 and "is not a demo configuration" in proc.stderr
    assert (tmp_path / "config.toml").read_text() == "# my own\n"


def test_the_simulator_refuses_bad_faults_and_keeps_serving(sim: SimHandle) -> None:
    import httpx

    for bad in (
        '{"trickle": -1}',
        '{"delay": "nan"}',
        '{"status": "abc"}',
        '{"headers": "x"}',
        '{"count": 1e400}',
        '{"size": 1e12}',
        '{"bogus": 1}',
        "[1]",
        "not json",
    ):
        answer = httpx.post(sim.url + "/_sim/faults", content=bad)
        assert answer.status_code == 400, bad
    assert httpx.post(sim.url + "/_sim/clock", json={"offset": 1e12}).status_code == 400
    assert httpx.get(sim.url + "/_sim/specs").status_code == 200
