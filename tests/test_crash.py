"""Crash safety: SIGKILL at many points loses nothing; a full or read-only disk is a clear error."""

from __future__ import annotations

import sqlite3
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from monitor.store import StateReader

from .conftest import MONITOR, HttpReceiver, SimHandle, cli_env, hook_config, wait_for, write_config
from .test_process import Process

V100 = "modelarts.vm.gpu.v100"
A100 = "modelarts.vm.gpu.a100"


def read(state: Path, fn: Callable[[StateReader], Any]) -> Any:
    try:
        reader = StateReader.open(state)
    except Exception:
        return None
    if reader is None:
        return None
    try:
        return fn(reader)
    except Exception:
        return None
    finally:
        reader.close()


def test_sigkill_at_many_points_loses_nothing(tmp_path: Path, sim: SimHandle, webhook: HttpReceiver) -> None:
    path = write_config(
        tmp_path,
        sim.url,
        notifiers=f"""
        [notifiers.hook]
        urls = ["json://127.0.0.1:{webhook.port}/alerts"]
        """,
        watches="""
        [[watch]]
        name = "gpus"
        region = "cn-north-4"
        job_type = "train"
        """,
    )
    state = tmp_path / "state"

    def events() -> list[Any]:
        return read(state, lambda r: r.events()) or []

    # Kill points, from the earliest to the latest moment of one run's work.
    points: list[tuple[str, Callable[[int, int], bool]]] = [
        ("at once", lambda e, d: True),
        ("once the database exists", lambda e, d: (state / "state.db").exists()),
        ("once the change is committed", lambda e, d: len(events()) > e),
        ("once the message arrived", lambda e, d: len(webhook.requests) > d),
        ("once nothing is pending", lambda e, d: len(events()) > e and read(state, lambda r: r.pending()) == []),
    ]
    kills = 0
    for round_ in range(10):
        name, ready = points[round_ % len(points)]
        # Something changes before every start, so every run has work in flight.
        sim.sim.set_spec(V100, no_resource=round_ % 2 == 0)
        sim.sim.set_spec(A100, max_num=round_ + 3)
        before_events, before_deliveries = len(events()), len(webhook.requests)
        proc = Process([*MONITOR, "run", "-c", str(path)])
        try:
            wait_for(
                lambda r=ready, e=before_events, d=before_deliveries: r(e, d),  # type: ignore[misc]
                20,
                f"kill point {name!r}",
            )
            proc.proc.kill()
            proc.proc.wait(10)
            kills += 1
        finally:
            proc.kill()

    # A last, clean run delivers whatever is still pending.
    import time

    started = time.time()
    final = Process([*MONITOR, "run", "-c", str(path)])

    def polled_since_start() -> bool:
        health = read(state, lambda r: r.query(next(iter(r.watch_states().values()))[0])[0])
        return health is not None and (health.last_poll_at or 0) > started

    try:
        wait_for(polled_since_start, 30, "a poll of the last run")
        wait_for(lambda: read(state, lambda r: r.pending()) == [], 30, "nothing pending")
        assert final.stop() == 0
    finally:
        final.kill()

    stored = events()
    received = Counter(body["message"] for body in webhook.bodies())
    delivered_ids = Counter()
    for message, times in received.items():
        for event in stored:
            if f"`{event.id}`" in message:
                delivered_ids[event.id] += times
    lost = [e for e in stored if e.id not in delivered_ids]
    assert not lost, f"events never delivered: {[(e.kind, e.spec_key) for e in lost]}"
    duplicates = sum(times - 1 for times in received.values())
    assert duplicates <= kills  # at most the message in flight at each kill
    assert any(e.kind == "available" for e in stored) and any(e.kind == "max_num" for e in stored)
    conn = sqlite3.connect(state / "state.db")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()


# -- a full or read-only disk -------------------------------------------------------------------------
@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 512 KiB tmpfs (needs root, as in CI; skipped elsewhere)."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(directory: Path) -> Path:
    import os

    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


def fs_config(tmp_path: Path, sim: SimHandle, webhook: HttpReceiver, state: Path) -> Path:
    path = hook_config(tmp_path, sim, webhook)
    path.write_text(path.read_text().replace(f'state_dir = "{tmp_path / "state"}"', f'state_dir = "{state}"'))
    return path


def test_a_full_disk_at_start_is_a_clear_error(
    tmp_path: Path, tiny_fs: Path, sim: SimHandle, webhook: HttpReceiver
) -> None:
    fill(tiny_fs)
    path = fs_config(tmp_path, sim, webhook, tiny_fs / "state")
    proc = subprocess.run([*MONITOR, "run", "-c", str(path)], capture_output=True, text=True, env=cli_env(), timeout=30)
    assert proc.returncode == 1
    assert "the disk is full" in proc.stderr or "No space left" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_disk_that_fills_up_while_running_loses_nothing(
    tmp_path: Path, tiny_fs: Path, sim: SimHandle, webhook: HttpReceiver
) -> None:
    path = fs_config(tmp_path, sim, webhook, tiny_fs / "state")
    daemon = Process([*MONITOR, "run", "-c", str(path)])
    try:
        webhook.wait(1)
        filler = fill(tiny_fs)
        # Changes keep coming while the disk is full: each poll's commit must fail cleanly.
        for i in range(40):
            sim.sim.set_spec(V100, max_num=10 + i)
            if any("the disk is full" in line for line in daemon.collect()):
                break
            polls = len(sim.sim.records())
            wait_for(lambda p=polls: len(sim.sim.records()) > p, 20, "the next poll")
        daemon.wait_line("the disk is full", 30)
        assert daemon.proc.poll() is None  # still running
        filler.unlink()
        sim.sim.set_spec(V100, no_resource=False)
        bodies = webhook.wait(2, timeout=30)
        assert any("available" in b["title"] for b in bodies[1:])
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    assert "Traceback" not in "\n".join(daemon.lines)


def test_a_read_only_state_directory_is_a_clear_error(
    tmp_path: Path, tiny_fs: Path, sim: SimHandle, webhook: HttpReceiver
) -> None:
    state = tiny_fs / "state"
    state.mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_fs)], check=True)
    path = fs_config(tmp_path, sim, webhook, state)
    proc = subprocess.run([*MONITOR, "run", "-c", str(path)], capture_output=True, text=True, env=cli_env(), timeout=30)
    assert proc.returncode == 1
    assert "read-only" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_delivery_that_cannot_be_recorded_is_not_resent(
    tmp_path: Path, tiny_fs: Path, sim: SimHandle, webhook: HttpReceiver
) -> None:
    """The disk fills while a message is being delivered: it must not go out again and again."""
    path = fs_config(tmp_path, sim, webhook, tiny_fs / "state")
    daemon = Process([*MONITOR, "run", "-c", str(path)])
    try:
        webhook.wait(1)
        webhook.delay = 2.0
        sim.sim.set_spec(V100, no_resource=False)
        webhook.wait(2)  # the message is in flight now (recorded on arrival, answered in 2 s)
        filler = fill(tiny_fs)
        daemon.wait_line("delivery bookkeeping failed", 20)
        polls = len(sim.sim.records())
        wait_for(lambda: len(sim.sim.records()) > polls, 20, "another poll")
        assert len(webhook.requests) == 2  # delivered once, never resent
        filler.unlink()
        assert daemon.stop() == 0
    finally:
        daemon.kill()
