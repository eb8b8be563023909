"""Running as a service: the unit file, sd_notify, SIGHUP reload, logs, exit statuses.

Real processes and signals: the daemon runs as a subprocess with NOTIFY_SOCKET
pointing at a datagram socket this test reads.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from .conftest import MONITOR, HttpReceiver, SimHandle, cli_env, hook_config, wait_for
from .test_process import Process

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "modelarts-monitor.service"
V100 = "modelarts.vm.gpu.v100"


# -- the unit file -------------------------------------------------------------------------------
def unit_with_real_binary(tmp_path: Path) -> Path:
    """The shipped unit, with ExecStart pointing at this checkout's installed command."""
    binary = Path(sys.executable).parent / "modelarts-monitor"
    text = UNIT.read_text().replace("/opt/modelarts-monitor/bin/modelarts-monitor", str(binary))
    path = tmp_path / "modelarts-monitor.service"
    path.write_text(text)
    return path


needs_systemd = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")


@needs_systemd
def test_the_unit_file_verifies(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit_with_real_binary(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "modelarts-monitor.service" not in proc.stderr, proc.stderr


@needs_systemd
def test_the_unit_is_rated_ok_by_systemd_analyze_security(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(unit_with_real_binary(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", proc.stdout)
    assert m, proc.stdout[-500:] + proc.stderr
    assert float(m[1]) <= 1.5 and m[2] == "OK", m[0]


def test_the_unit_has_what_the_service_needs() -> None:
    text = UNIT.read_text()
    for line in [
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "RestartPreventExitStatus=64 78",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "DynamicUser=yes",
        "StateDirectory=modelarts-monitor",
        "ConfigurationDirectory=modelarts-monitor",
        "LoadCredential=hw_secret_key:",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
        "RestrictAddressFamilies=",
        "SystemCallFilter=",
        "MemoryDenyWriteExecute=yes",
    ]:
        assert line in text, line


def test_the_readme_install_steps_use_the_unit_paths() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Install as a service", 1)[1].split("\n## ", 1)[0]
    for path in [
        "/opt/modelarts-monitor/bin/modelarts-monitor",
        "/etc/modelarts-monitor/config.toml",
        "/etc/modelarts-monitor/hw_secret_key",
        "cred:hw_secret_key",
        "/etc/systemd/system/modelarts-monitor.service",
    ]:
        assert path in section, path
    assert path_in_unit("/etc/modelarts-monitor/hw_secret_key")


def path_in_unit(path: str) -> bool:
    return path in UNIT.read_text()


# -- sd_notify with a real datagram socket ----------------------------------------------------------
class NotifySocket:
    def __init__(self) -> None:
        self.name = f"mm-test-{uuid.uuid4().hex[:12]}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name)
        self.sock.settimeout(0.2)
        self.messages: list[str] = []

    @property
    def address(self) -> str:
        return "@" + self.name

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except (TimeoutError, BlockingIOError):
                return self.messages

    def wait(self, text: str, after: int = 0, timeout: float = 20) -> int:
        """Index of the first datagram after ``after`` that contains ``text``."""

        def find() -> int | None:
            for i, m in enumerate(self.drain()[after:], after):
                if text in m:
                    return i + 1
            return None

        return int(wait_for(find, timeout, f"a datagram with {text!r}; got {self.messages[-5:]}"))

    def close(self) -> None:
        self.sock.close()


def service_config(
    tmp_path: Path, sim: SimHandle, webhook: HttpReceiver, extra_watch: str = "", monitor: str = ""
) -> Path:
    return hook_config(tmp_path, sim, webhook, extra_watches=extra_watch, monitor=monitor)


def test_sd_notify_ready_status_watchdog_reload_and_stopping(
    tmp_path: Path, sim: SimHandle, webhook: HttpReceiver
) -> None:
    notify = NotifySocket()
    path = service_config(tmp_path, sim, webhook)
    daemon = Process(
        [*MONITOR, "run", "-c", str(path)], env=cli_env(NOTIFY_SOCKET=notify.address, WATCHDOG_USEC="600000")
    )
    try:
        ready = notify.wait("READY=1")
        assert (tmp_path / "state" / "state.db").exists()  # the database was open before READY
        # STATUS= after the first cycle
        status = notify.wait("STATUS=1 queries (0 failing), 2 specs watched, 1 available", ready)
        notify.wait("WATCHDOG=1", status)
        watchdog_count = sum(m == "WATCHDOG=1" for m in notify.drain())
        wait_for(
            lambda: sum(m == "WATCHDOG=1" for m in notify.drain()) >= watchdog_count + 2, 10, "repeated watchdog pings"
        )

        before = len(notify.drain())
        daemon.proc.send_signal(signal.SIGHUP)
        reloading = notify.wait("RELOADING=1", before)
        message = notify.messages[reloading - 1]
        usec = int(re.search(r"MONOTONIC_USEC=(\d+)", message)[1])  # type: ignore[index]
        assert abs(usec / 1e6 - time.clock_gettime(time.CLOCK_MONOTONIC)) < 30
        notify.wait("READY=1", reloading)

        assert daemon.stop(signal.SIGTERM) == 0
        notify.wait("STOPPING=1")
    finally:
        daemon.kill()
        notify.close()


def test_sighup_applies_a_good_file_and_keeps_state(tmp_path: Path, sim: SimHandle, webhook: HttpReceiver) -> None:
    notify = NotifySocket()
    path = service_config(tmp_path, sim, webhook)
    daemon = Process([*MONITOR, "run", "-c", str(path)], env=cli_env(NOTIFY_SOCKET=notify.address))
    try:
        webhook.wait(1)  # the baseline of "v100"
        # Add a watch and leave "v100" unchanged: only the new one takes a baseline.
        path.write_text(
            path.read_text() + '\n[[watch]]\nname = "a100"\nregion = "cn-north-4"\n'
            'job_type = "train"\ngpu_types = ["a100"]\n'
        )
        before = len(notify.drain())
        daemon.proc.send_signal(signal.SIGHUP)
        notify.wait("READY=1", notify.wait("RELOADING=1", before))
        bodies = webhook.wait(2)
        assert bodies[1]["title"].startswith("a100: monitoring started")
        daemon.wait_line("configuration reloaded: 2 watches (a100 added, none removed)", 10)
        # The unchanged watch kept its state: a change is an alert, not a second baseline.
        sim.sim.set_spec(V100, no_resource=False)
        bodies = webhook.wait(3, timeout=30)
        assert bodies[2]["title"] == f"v100: {V100} available"
        assert daemon.stop() == 0
    finally:
        daemon.kill()
        notify.close()


def test_sighup_with_a_broken_file_keeps_the_old_configuration(
    tmp_path: Path, sim: SimHandle, webhook: HttpReceiver
) -> None:
    path = service_config(tmp_path, sim, webhook)
    good = path.read_text()
    daemon = Process([*MONITOR, "run", "-c", str(path)])
    try:
        webhook.wait(1)
        path.write_text(good.replace('gpu_types = ["v100"]', 'gpu_types = "v100"\nbogus = 1'))
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_line("reload rejected: the previous configuration keeps running", 10)
        output = "\n".join(daemon.collect())
        assert "watch[0].gpu_types: expected a list of strings" in output
        assert "watch[0].bogus: unknown key" in output
        sim.sim.set_spec(V100, no_resource=False)  # the old configuration still works
        assert webhook.wait(2, timeout=30)[1]["title"] == f"v100: {V100} available"
        assert daemon.proc.poll() is None
        assert daemon.stop() == 0
    finally:
        daemon.kill()


# -- logs -----------------------------------------------------------------------------------------
def test_under_journald_lines_have_priorities_and_no_timestamps(
    tmp_path: Path, sim: SimHandle, webhook: HttpReceiver
) -> None:
    read_end, write_end = os.pipe()
    st = os.fstat(write_end)
    path = service_config(tmp_path, sim, webhook)
    proc = subprocess.Popen(
        [*MONITOR, "run", "-c", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=write_end,
        env=cli_env(JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}"),
    )
    os.close(write_end)
    try:
        webhook.wait(1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        with os.fdopen(read_end) as stream:
            lines = stream.read().splitlines()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert lines and all(re.match(r"<[0-7]>", line) for line in lines), lines
    assert not any(re.search(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}", line) for line in lines)
    assert any(line.startswith("<6>") and "started" in line for line in lines)


def test_json_logs_one_object_per_line(tmp_path: Path, sim: SimHandle, webhook: HttpReceiver) -> None:
    path = service_config(tmp_path, sim, webhook, monitor='log_format = "json"')
    daemon = Process([*MONITOR, "run", "-c", str(path)])
    try:
        webhook.wait(1)
        daemon.wait_line('"delivered', 10)
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    records = [json.loads(line) for line in daemon.collect() if line.strip()]
    kinds = {r.get("kind") for r in records}
    assert "baseline" in kinds
    delivered = [r for r in records if r["message"].startswith("delivered")]
    assert delivered and delivered[0]["watch"] == "v100" and delivered[0]["level"] == "info"


def test_quiet_polls_log_nothing_at_info(tmp_path: Path, sim: SimHandle, webhook: HttpReceiver) -> None:
    path = service_config(tmp_path, sim, webhook)
    daemon = Process([*MONITOR, "run", "-c", str(path)])
    try:
        webhook.wait(1)
        daemon.wait_line("delivered", 10)
        count = len(daemon.collect())
        polls = len(sim.sim.records())
        # The operator commands read the database while the daemon runs.
        started = time.monotonic()
        status = subprocess.run(
            [*MONITOR, "status", "--json", "-c", str(path)], capture_output=True, text=True, env=cli_env(), timeout=30
        )
        assert status.returncode == 0 and time.monotonic() - started < 10
        assert json.loads(status.stdout)["watches"][0]["last_success"] is not None
        history = subprocess.run(
            [*MONITOR, "history", "-c", str(path)], capture_output=True, text=True, env=cli_env(), timeout=30
        )
        assert history.returncode == 0 and "baseline" in history.stdout
        wait_for(lambda: len(sim.sim.records()) >= polls + 2, 20, "two more quiet polls")
        assert len(daemon.collect()) == count, daemon.lines[count:]
        assert daemon.stop() == 0
    finally:
        daemon.kill()
