"""The SQLite state: one transaction per poll, the outbox's lanes, pruning."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from monitor.detect import PollResult, QueryHealth
from monitor.errors import StateError
from monitor.model import Event, Message, Snapshot, Spec
from monitor.store import Outgoing, SqliteStore, StateReader, Target

T0 = 1_800_000_000.0
SPEC = Spec(key="x", spec_code="x", no_resource=False, max_num=1, gpu_num=1, gpu_type="v100")


def result(events: list[Event] | None = None) -> PollResult:
    return PollResult(QueryHealth(last_success_at=T0), Snapshot(T0, (SPEC,)), {}, {"w": events or []})


def out(watch: str, title: str, *keys: str, held: float | None = None) -> Outgoing:
    targets = [Target("n", k, f"json://host/{k}") for k in keys]
    return Outgoing(watch, Message(title, "body", ()), targets, {"n": held} if held else {})


def test_a_poll_is_committed_with_its_messages(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path)
    event = Event("abcd1234", "w", "available", T0, "x", {"spec_code": "x"})
    ids = store.commit_poll("q", result([event]), [out("w", "t", "u1", "u2")], T0)
    assert len(ids) == 2
    health, snapshot = store.load_query("q")
    assert snapshot is not None and snapshot.specs == (SPEC,)
    assert health.last_success_at == T0
    reader = StateReader.open(tmp_path)
    assert reader is not None
    assert [e.id for e in reader.events()] == ["abcd1234"]
    reader.close()
    store.close()


def test_each_lane_delivers_in_order(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path)
    store.queue_messages([out("w", "first", "u1", "u2")], T0)
    store.queue_messages([out("w", "second", "u1", "u2"), out("other", "third", "u1")], T0)
    due = store.due_deliveries(T0 + 1)
    assert [(d.watch, d.url_key, d.title) for d in due] == [
        ("w", "u1", "first"),
        ("w", "u2", "first"),
        ("other", "u1", "third"),
    ]
    first_u1 = due[0]
    store.mark_failed(first_u1.id, "boom", T0 + 100, T0 + 1)
    due = store.due_deliveries(T0 + 2)
    # u1's lane waits for its failed head; u2's lane moves on independently.
    assert ("w", "u1", "second") not in [(d.watch, d.url_key, d.title) for d in due]
    store.mark_sent(due[0].id, T0 + 2)
    titles = [(d.url_key, d.title) for d in store.due_deliveries(T0 + 3) if d.watch == "w"]
    assert titles == [("u2", "second")]
    assert store.next_due() == T0 + 3 or store.next_due() is not None
    store.close()


def test_held_messages_wait_for_the_end_of_quiet_hours(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path)
    store.queue_messages([out("w", "held one", "u1", held=T0 + 3600)], T0)
    store.queue_messages([out("w", "held two", "u1", held=T0 + 3600)], T0 + 10)
    assert store.due_deliveries(T0 + 100) == []
    assert store.held_due(T0 + 100) == []
    assert store.next_due() == T0 + 3600
    groups = store.held_due(T0 + 3600)
    assert len(groups) == 1 and [t for _, _, t, _ in groups[0][1]] == ["held one", "held two"]
    store.close()


def test_pruning_removes_old_history(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path)
    old = Event("00000001", "w", "available", T0 - 100_000, "x", {})
    new = Event("00000002", "w", "available", T0, "x", {})
    store.commit_poll("q", result([old, new]), [], T0)
    assert store.prune(T0 - 1000) == 1
    reader = StateReader.open(tmp_path)
    assert reader is not None
    assert [e.id for e in reader.events()] == ["00000002"]
    reader.close()
    store.close()


def test_a_damaged_database_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "state.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StateError, match="damaged"):
        SqliteStore.open(tmp_path)


def test_a_reader_does_not_block_the_writer(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path)
    reader = StateReader.open(tmp_path)
    assert reader is not None
    conn = sqlite3.connect(tmp_path / "state.db")
    conn.execute("BEGIN")
    conn.execute("SELECT * FROM events").fetchall()  # a long read transaction
    store.commit_poll("q", result(), [out("w", "t", "u1")], T0)  # WAL: not blocked
    conn.rollback()
    conn.close()
    reader.close()
    store.close()
