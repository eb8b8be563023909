"""Real processes and signals: the daemon and the demo as a user starts them."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from monitor.store import StateReader

from .conftest import MONITOR, OUTPUTS, HttpReceiver, SimHandle, cli_env, hook_config, wait_for

V100 = "modelarts.vm.gpu.v100"


class Process:
    """A command whose output lines can be waited for with a deadline."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None):
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env or cli_env(NO_COLOR="1")
        )
        self.lines: list[str] = []
        OUTPUTS.append(self.lines)  # checked for secrets after the test
        self._queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))

    def collect(self) -> list[str]:
        while True:
            try:
                self.lines.append(self._queue.get_nowait())
            except queue.Empty:
                return self.lines

    def wait_line(self, text: str, timeout: float) -> str:
        found = wait_for(
            lambda: next((line for line in self.collect() if text in line), None),
            timeout,
            f"a line containing {text!r}; got:\n" + "\n".join(self.lines[-30:]),
        )
        return str(found)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """Make sure the process is gone and its pipe closed (always called in finally)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def config_for(tmp_path: Path, sim: SimHandle, webhook: HttpReceiver) -> Path:
    return hook_config(tmp_path, sim, webhook)


def stored(state_dir: Path, what: str) -> object:
    reader = StateReader.open(state_dir)
    if reader is None:
        return None
    try:
        if what == "events":
            return reader.events()
        if what == "pending":
            return reader.pending()
        health, _ = reader.query(next(iter(reader.watch_states().values()))[0])
        return health
    except StopIteration:
        return None
    finally:
        reader.close()


def test_sigterm_stops_cleanly_within_ten_seconds(tmp_path: Path, sim: SimHandle, webhook: HttpReceiver) -> None:
    path = config_for(tmp_path, sim, webhook)
    daemon = Process([*MONITOR, "run", "-c", str(path)])
    try:
        webhook.wait(1)
        started = time.monotonic()
        assert daemon.stop(signal.SIGTERM) == 0
        assert time.monotonic() - started < 10
        output = "\n".join(daemon.collect())
        assert "Traceback" not in output and "stopped" in output
    finally:
        daemon.kill()


def test_sigint_also_stops_cleanly(tmp_path: Path, sim: SimHandle, webhook: HttpReceiver) -> None:
    daemon = Process([*MONITOR, "run", "-c", str(config_for(tmp_path, sim, webhook))])
    try:
        webhook.wait(1)
        assert daemon.stop(signal.SIGINT) == 0
    finally:
        daemon.kill()


def test_a_message_detected_but_not_delivered_survives_sigkill(
    tmp_path: Path, sim: SimHandle, webhook: HttpReceiver
) -> None:
    path = config_for(tmp_path, sim, webhook)
    state = tmp_path / "state"
    daemon = Process([*MONITOR, "run", "-c", str(path)])
    try:
        webhook.wait(1)  # the baseline
        webhook.hang = True  # the next delivery never completes
        sim.sim.set_spec(V100, no_resource=False)
        events = wait_for(
            lambda: [e for e in stored(state, "events") or [] if e.kind == "available"],  # type: ignore[union-attr]
            20,
            "the change to be detected and committed",
        )
        daemon.proc.kill()  # SIGKILL: no chance to finish anything
        daemon.proc.wait(10)
    finally:
        daemon.kill()
    assert len(webhook.requests) == 1
    webhook.hang = False

    restarted = Process([*MONITOR, "run", "-c", str(path)])
    try:
        bodies = webhook.wait(2)
        assert "available" in bodies[1]["title"]
        assert events[0].id in bodies[1]["message"]
        assert restarted.stop() == 0
    finally:
        restarted.kill()

    # A plain restart sends nothing: wait for a full poll after the restart, then look.
    since = time.time()
    polls = len(sim.sim.records())
    again = Process([*MONITOR, "run", "-c", str(path)])
    try:
        wait_for(lambda: len(sim.sim.records()) > polls, 20, "a poll after the second restart")
        wait_for(lambda: stored(state, "pending") == [], 10, "no pending deliveries")
        assert again.stop() == 0
    finally:
        again.kill()
    health = stored(state, "health")
    assert health is not None and health.last_poll_at > since  # type: ignore[attr-defined]  # written at stop
    assert len(webhook.requests) == 2
    reader = StateReader.open(state)
    assert reader is not None
    try:
        ok = reader._conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        reader.close()
    assert ok == "ok"


def test_the_demo_shows_a_capacity_alert_within_30_seconds(tmp_path: Path) -> None:
    started = time.monotonic()
    demo = Process([*MONITOR, "demo", "--keep", str(tmp_path / "demo")])
    try:
        demo.wait_line("monitoring started", 30)
        line = demo.wait_line("sold out → available", 30 - (time.monotonic() - started))
        assert time.monotonic() - started < 30, line
        assert demo.stop(signal.SIGINT) == 0
        assert "demo stopped" in "\n".join(demo.collect())
    finally:
        demo.kill()
    kept = tmp_path / "demo" / "config.toml"
    check = subprocess.run(
        [*MONITOR, "check", "-c", str(kept)], capture_output=True, text=True, env=cli_env(), timeout=60
    )
    assert check.returncode == 0, check.stderr  # the kept configuration works on its own


def test_the_state_database_is_private(tmp_path: Path, sim: SimHandle, webhook: HttpReceiver) -> None:
    daemon = Process([*MONITOR, "run", "-c", str(config_for(tmp_path, sim, webhook))])
    try:
        webhook.wait(1)
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    db = tmp_path / "state" / "state.db"
    assert oct(db.stat().st_mode & 0o777) == "0o600"
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


@pytest.mark.parametrize("command", [["--help"], ["run", "--help"], ["--version"]])
def test_help_and_version_exit_zero(command: list[str]) -> None:
    proc = subprocess.run([*MONITOR, *command], capture_output=True, text=True, env=cli_env(), timeout=30)
    assert proc.returncode == 0
    assert proc.stdout.strip()


def test_unexpected_state_dir_problems_are_a_clear_message(
    tmp_path: Path, sim: SimHandle, webhook: HttpReceiver
) -> None:
    path = config_for(tmp_path, sim, webhook)
    blocker = tmp_path / "state"
    blocker.write_text("a file where the state directory should be")
    proc = subprocess.run([*MONITOR, "run", "-c", str(path)], capture_output=True, text=True, env=cli_env(), timeout=30)
    assert proc.returncode == 78
    assert "monitor.state_dir" in proc.stderr and "is not a directory" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert os.path.isfile(blocker)
