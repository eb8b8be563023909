"""The state database: snapshots, detection state, event history and the outbox.

One SQLite file (``state.db``, WAL mode, mode 0600) in the state directory.
Each poll's result, with the messages it produces, is committed in one
transaction before anything is sent, so ``kill -9`` at any moment loses
nothing already committed and a restart sends no duplicates.

The outbox holds one row per message per apprise URL: each URL is its own
delivery, retried on its own, in order per watch. Rows name the URL by its
notifier and position (``team-slack#0``) and a masked label, never the URL
itself, so no secret is written here.

Calls are blocking; the daemon runs them in a worker thread. A lock makes one
connection safe to share between threads; readers in other processes
(``status``, ``history``) open their own read-only connection and never block
the daemon.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .detect import PollResult, QueryHealth, WatchState
from .errors import StateError
from .model import Event, Message, Snapshot

SCHEMA_VERSION = 1
DB_NAME = "state.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS snapshots (
    query TEXT PRIMARY KEY, taken_at REAL NOT NULL, specs TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS query_health (query TEXT PRIMARY KEY, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS watch_state (
    watch TEXT PRIMARY KEY, query TEXT NOT NULL, updated_at REAL NOT NULL, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL, watch TEXT NOT NULL, kind TEXT NOT NULL,
    spec TEXT, at REAL NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_at ON events (at);
CREATE INDEX IF NOT EXISTS events_watch_at ON events (watch, at);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY, watch TEXT NOT NULL, created_at REAL NOT NULL,
    title TEXT NOT NULL, body TEXT NOT NULL, event_ids TEXT NOT NULL, urgent INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY, message INTEGER NOT NULL REFERENCES messages (id),
    watch TEXT NOT NULL, notifier TEXT NOT NULL, url_key TEXT NOT NULL, url_label TEXT NOT NULL,
    status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL,
    next_at REAL NOT NULL, updated_at REAL NOT NULL, last_error TEXT);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (status, next_at);
CREATE INDEX IF NOT EXISTS outbox_lane ON outbox (watch, url_key, status, id);
"""

PENDING, SENT, DROPPED, HELD = "pending", "sent", "dropped", "held"  # and "merged" into a digest


@dataclass(frozen=True)
class Target:
    """One apprise URL of one notifier, as the outbox knows it."""

    notifier: str
    url_key: str
    url_label: str  # masked, fit to show


@dataclass(frozen=True)
class Outgoing:
    """One message of one watch, to be queued for each target URL."""

    watch: str
    message: Message
    targets: Sequence[Target]
    held_until: Mapping[str, float] = field(default_factory=dict)  # notifier -> quiet hours end


@dataclass(frozen=True)
class Delivery:
    id: int
    message_id: int
    watch: str
    notifier: str
    url_key: str
    url_label: str
    attempts: int
    created_at: float
    title: str
    body: str
    urgent: bool


@contextmanager
def _decoding(path: Path) -> Iterator[None]:
    """Turn a row that does not decode (edited by hand, written by a bug) into a clear StateError."""
    try:
        yield
    except (ValueError, KeyError, TypeError) as exc:
        raise _state_error(exc, path) from None


def _state_error(exc: BaseException, path: Path) -> StateError:
    text = str(exc)
    if isinstance(exc, sqlite3.OperationalError) and "disk I/O error" in text:
        return StateError(
            f"cannot use the state database {path}: disk I/O error (is the disk full, or the file system read-only?)"
        )
    if isinstance(exc, sqlite3.OperationalError) and "disk is full" in text:
        return StateError(f"cannot write the state database {path}: the disk is full")
    if isinstance(exc, sqlite3.OperationalError) and "readonly" in text.replace("-", "").replace(" ", ""):
        return StateError(f"cannot write the state database {path}: it or its directory is read-only")
    if isinstance(exc, sqlite3.DatabaseError) and ("malformed" in text or "not a database" in text):
        return StateError(f"the state database {path} is damaged ({text}); move it aside to start afresh")
    if isinstance(exc, (ValueError, KeyError, TypeError)) and not isinstance(exc, OSError):
        return StateError(
            f"the state database {path} holds a damaged record ({type(exc).__name__}: {text}); "
            "move it aside to start afresh"
        )
    if isinstance(exc, OSError):
        import errno

        if exc.errno == errno.EROFS:
            return StateError(f"cannot write the state directory {path.parent}: it is read-only")
        if exc.errno in (errno.EACCES, errno.EPERM):
            return StateError(
                f"cannot write the state directory {path.parent}: permission denied (run as its owner, "
                "or set state_dir to a directory this user can write)"
            )
        if exc.errno == errno.ENOSPC:
            return StateError(f"cannot write the state database {path}: the disk is full")
        return StateError(f"cannot use the state directory {path.parent}: {exc.strerror or exc}")
    return StateError(f"state database {path}: {text}")


LOCK_NAME = "writer.lock"


def _take_writer_lock(state_dir: Path) -> int:
    """One writer per state directory: two daemons would each send every alert."""
    import fcntl

    path = state_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        try:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        except OSError:
            holder = "?"
        os.close(fd)
        raise StateError(
            f"another modelarts-monitor (pid {holder}) is already using the state directory {state_dir}; "
            "stop it first (`once --notify` needs the daemon stopped), or give this one another state_dir"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


class SqliteStore:
    """The daemon's read-write handle on state.db (one writer per state directory)."""

    def __init__(self, conn: sqlite3.Connection, path: Path, lock_fd: int | None = None):
        self._conn = conn
        self.path = path
        self._lock = threading.RLock()
        self._lock_fd = lock_fd

    # -- opening -------------------------------------------------------------------------------
    @classmethod
    def open(cls, state_dir: Path) -> SqliteStore:
        path = state_dir / DB_NAME
        try:
            state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not path.exists():
                fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
                os.close(fd)
            else:
                os.chmod(path, 0o600)
            if not os.access(state_dir, os.W_OK):
                raise StateError(f"cannot write the state directory {state_dir}: it is read-only")
            lock_fd = _take_writer_lock(state_dir)
            try:
                conn = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
            except BaseException:
                os.close(lock_fd)
                raise
        except StateError:
            raise
        except (OSError, sqlite3.Error, ValueError) as exc:
            raise _state_error(exc, path) from None
        store = cls(conn, path, lock_fd)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.executescript(_SCHEMA)
            row = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                conn.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) > SCHEMA_VERSION:
                raise StateError(
                    f"the state database {path} was written by a newer modelarts-monitor "
                    f"(schema {row[0]}); upgrade, or move it aside"
                )
            for suffix in ("-wal", "-shm"):
                side = Path(f"{path}{suffix}")
                if side.exists():
                    os.chmod(side, 0o600)
        except StateError:
            store.close()
            raise
        except (sqlite3.Error, OSError, ValueError) as exc:
            store.close()
            raise _state_error(exc, path) from None
        return store

    def close(self) -> None:
        with self._lock:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the writer lock
                self._lock_fd = None

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._conn.in_transaction:
                    try:
                        self._conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                raise _state_error(exc, self.path) from None

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                cur = self._conn.execute(sql, args)
                return cur.fetchall()
            except sqlite3.Error as exc:
                raise _state_error(exc, self.path) from None

    # -- detection state -----------------------------------------------------------------------
    def load_query(self, query: str) -> tuple[QueryHealth, Snapshot | None]:
        health_rows = self._read("SELECT state FROM query_health WHERE query=?", (query,))
        snap_rows = self._read("SELECT taken_at, specs FROM snapshots WHERE query=?", (query,))
        with _decoding(self.path):
            health = QueryHealth.from_json(json.loads(health_rows[0][0])) if health_rows else QueryHealth()
            snapshot = Snapshot.from_json(snap_rows[0][0], json.loads(snap_rows[0][1])) if snap_rows else None
        return health, snapshot

    def load_watch_states(self, names: Sequence[str]) -> dict[str, WatchState | None]:
        result: dict[str, WatchState | None] = dict.fromkeys(names)
        with _decoding(self.path):
            for name, state in self._read("SELECT watch, state FROM watch_state"):
                if name in result:
                    result[name] = WatchState.from_json(json.loads(state))
        return result

    def commit_poll(self, query: str, result: PollResult, outgoing: Sequence[Outgoing], now: float) -> list[int]:
        """Store one poll's outcome and queue its messages, all in one transaction.

        Returns the new outbox ids.
        """
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO query_health VALUES (?, ?) ON CONFLICT(query) DO UPDATE SET state=excluded.state",
                (query, json.dumps(result.health.to_json())),
            )
            if result.snapshot is not None and result.snapshot_changed:
                conn.execute(
                    "INSERT INTO snapshots VALUES (?, ?, ?) ON CONFLICT(query) DO UPDATE SET "
                    "taken_at=excluded.taken_at, specs=excluded.specs",
                    (query, result.snapshot.taken_at, json.dumps(result.snapshot.to_json())),
                )
            for watch, state in result.states.items():
                conn.execute(
                    "INSERT INTO watch_state VALUES (?, ?, ?, ?) ON CONFLICT(watch) DO UPDATE SET "
                    "query=excluded.query, updated_at=excluded.updated_at, state=excluded.state",
                    (watch, query, now, json.dumps(state.to_json())),
                )
            conn.executemany(
                "INSERT INTO events (id, watch, kind, spec, at, data) VALUES (?, ?, ?, ?, ?, ?)",
                [(e.id, e.watch, e.kind, e.spec_key, e.at, json.dumps(e.data)) for e in result.all_events],
            )
            return self._queue(conn, outgoing, now)

    def _queue(self, conn: sqlite3.Connection, outgoing: Sequence[Outgoing], now: float) -> list[int]:
        ids = []
        for out in outgoing:
            message = out.message
            cur = conn.execute(
                "INSERT INTO messages (watch, created_at, title, body, event_ids, urgent) VALUES (?, ?, ?, ?, ?, ?)",
                (out.watch, now, message.title, message.body, json.dumps(message.event_ids), int(message.urgent)),
            )
            message_id = cur.lastrowid
            for t in out.targets:
                held = out.held_until.get(t.notifier)
                cur = conn.execute(
                    "INSERT INTO outbox (message, watch, notifier, url_key, url_label, status, "
                    "created_at, next_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        message_id,
                        out.watch,
                        t.notifier,
                        t.url_key,
                        t.url_label,
                        HELD if held is not None else PENDING,
                        now,
                        held if held is not None else now,
                        now,
                    ),
                )
                ids.append(int(cur.lastrowid or 0))
        return ids

    def save_health(self, healths: Mapping[str, QueryHealth]) -> None:
        """Write the health of queries whose quiet polls were only kept in memory."""
        with self._tx() as conn:
            conn.executemany(
                "INSERT INTO query_health VALUES (?, ?) ON CONFLICT(query) DO UPDATE SET state=excluded.state",
                [(key, json.dumps(h.to_json())) for key, h in healths.items()],
            )

    def queue_messages(self, outgoing: Sequence[Outgoing], now: float) -> list[int]:
        with self._tx() as conn:
            return self._queue(conn, outgoing, now)

    def held_due(self, now: float) -> list[tuple[Target, list[tuple[int, str, str, str]]]]:
        """Messages held by quiet hours whose window has ended, grouped per URL.

        Each group is (target, [(outbox id, watch, title, body), ...]) in order.
        """
        rows = self._read(
            "SELECT o.id, o.notifier, o.url_key, o.url_label, o.watch, m.title, m.body "
            "FROM outbox o JOIN messages m ON m.id = o.message "
            "WHERE o.status = 'held' AND o.next_at <= ? ORDER BY o.id",
            (now,),
        )
        groups: dict[tuple[str, str], tuple[Target, list[tuple[int, str, str, str]]]] = {}
        for oid, notifier, key, label, watch, title, body in rows:
            group = groups.setdefault((notifier, key), (Target(notifier, key, label), []))
            group[1].append((oid, watch, title, body))
        return list(groups.values())

    def release_held(self, held_ids: Sequence[int], digest: Outgoing, now: float) -> list[int]:
        """Replace held deliveries by one digest delivery, atomically."""
        with self._tx() as conn:
            conn.executemany(
                "UPDATE outbox SET status='merged', updated_at=? WHERE id=? AND status='held'",
                [(now, i) for i in held_ids],
            )
            return self._queue(conn, [digest], now)

    def forget_watches(self, keep: Sequence[str]) -> list[str]:
        """Drop detection state of watches no longer configured; returns their names."""
        rows = self._read("SELECT watch FROM watch_state")
        gone = [r[0] for r in rows if r[0] not in set(keep)]
        if gone:
            with self._tx() as conn:
                conn.executemany("DELETE FROM watch_state WHERE watch=?", [(g,) for g in gone])
        return gone

    # -- outbox --------------------------------------------------------------------------------
    def due_deliveries(self, now: float, limit: int = 50) -> list[Delivery]:
        """The oldest pending delivery of each (watch, URL) lane, if it is due."""
        rows = self._read(
            """
            SELECT o.id, o.message, o.watch, o.notifier, o.url_key, o.url_label, o.attempts,
                   o.created_at, m.title, m.body, m.urgent
            FROM outbox o JOIN messages m ON m.id = o.message
            WHERE o.id IN (SELECT MIN(id) FROM outbox WHERE status = 'pending'
                           GROUP BY watch, url_key)
              AND o.next_at <= ?
            ORDER BY o.id LIMIT ?
            """,
            (now, limit),
        )
        return [Delivery(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], bool(r[10])) for r in rows]

    def next_due(self) -> float | None:
        """The earliest time a delivery is due or a quiet-hours hold ends."""
        rows = self._read(
            "SELECT MIN(next_at) FROM outbox WHERE id IN (SELECT MIN(id) FROM outbox "
            "WHERE status = 'pending' GROUP BY watch, url_key) OR status = 'held'"
        )
        return rows[0][0] if rows and rows[0][0] is not None else None

    def mark_sent(self, delivery_id: int, now: float) -> None:
        with self._tx() as conn:
            conn.execute(
                "UPDATE outbox SET status=?, attempts=attempts+1, updated_at=?, last_error=NULL WHERE id=?",
                (SENT, now, delivery_id),
            )

    def mark_failed(self, delivery_id: int, error: str, next_at: float, now: float) -> None:
        with self._tx() as conn:
            conn.execute(
                "UPDATE outbox SET attempts=attempts+1, next_at=?, updated_at=?, last_error=? WHERE id=?",
                (next_at, now, error, delivery_id),
            )

    def mark_dropped(self, delivery_id: int, error: str, now: float) -> None:
        with self._tx() as conn:
            conn.execute(
                "UPDATE outbox SET status=?, updated_at=?, last_error=? WHERE id=?",
                (DROPPED, now, error, delivery_id),
            )

    def watches_with_event(self, kind: str, since: float) -> set[str]:
        return {r[0] for r in self._read("SELECT DISTINCT watch FROM events WHERE kind = ? AND at >= ?", (kind, since))}

    def pending_count(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM outbox WHERE status='pending'")[0][0])

    # -- housekeeping --------------------------------------------------------------------------
    def prune(self, before: float) -> int:
        """Delete history, delivered messages and old snapshots older than ``before``."""
        with self._tx() as conn:
            n = conn.execute("DELETE FROM events WHERE at < ?", (before,)).rowcount
            conn.execute(
                "DELETE FROM outbox WHERE status IN ('sent', 'dropped', 'merged') AND updated_at < ?", (before,)
            )
            conn.execute(
                "DELETE FROM messages WHERE created_at < ? AND id NOT IN (SELECT message FROM outbox)",
                (before,),
            )
        return n


# -- read-only access for the operator commands ------------------------------------------------
class StateReader:
    """A read-only view for ``status``, ``history`` and ``once``; never blocks the daemon."""

    def __init__(self, conn: sqlite3.Connection, path: Path):
        self._conn = conn
        self.path = path

    @classmethod
    def open(cls, state_dir: Path) -> StateReader | None:
        path = state_dir / DB_NAME
        if not path.exists():
            return None
        from urllib.parse import quote

        uri = f"file:{quote(str(path))}?mode=ro"  # a path may hold '#', '?' or '%'
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=5)
            try:
                conn.execute("SELECT 1 FROM meta").fetchall()
            except sqlite3.OperationalError:
                # On a read-only mount no -shm file can be made: read the file as it is.
                conn.close()
                conn = sqlite3.connect(uri + "&immutable=1", uri=True, timeout=5)
                conn.execute("SELECT 1 FROM meta").fetchall()
            conn.execute("PRAGMA query_only=ON")
        except sqlite3.Error as exc:
            raise _state_error(exc, path) from None
        return cls(conn, path)

    def close(self) -> None:
        self._conn.close()

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._conn.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise _state_error(exc, self.path) from None

    def watch_states(self) -> dict[str, tuple[str, float, WatchState]]:
        rows = self._rows("SELECT watch, query, updated_at, state FROM watch_state")
        with _decoding(self.path):
            return {r[0]: (r[1], r[2], WatchState.from_json(json.loads(r[3]))) for r in rows}

    def query(self, query: str) -> tuple[QueryHealth | None, Snapshot | None]:
        health_rows = self._rows("SELECT state FROM query_health WHERE query=?", (query,))
        snap_rows = self._rows("SELECT taken_at, specs FROM snapshots WHERE query=?", (query,))
        with _decoding(self.path):
            health = QueryHealth.from_json(json.loads(health_rows[0][0])) if health_rows else None
            snapshot = Snapshot.from_json(snap_rows[0][0], json.loads(snap_rows[0][1])) if snap_rows else None
        return health, snapshot

    def events(self, *, watch: str | None = None, since: float | None = None, limit: int = 10000) -> list[Event]:
        sql = "SELECT id, watch, kind, spec, at, data FROM events WHERE 1=1"
        args: list[Any] = []
        if watch is not None:
            sql += " AND watch = ?"
            args.append(watch)
        if since is not None:
            sql += " AND at >= ?"
            args.append(since)
        sql += " ORDER BY at, seq LIMIT ?"
        args.append(limit)
        rows = self._rows(sql, args)
        with _decoding(self.path):
            return [Event(r[0], r[1], r[2], r[4], r[3], json.loads(r[5])) for r in rows]

    def outbox_summary(self) -> dict[str, dict[str, int]]:
        """Per watch: counts of deliveries by status."""
        result: dict[str, dict[str, int]] = {}
        for watch, status, count in self._rows("SELECT watch, status, COUNT(*) FROM outbox GROUP BY watch, status"):
            result.setdefault(watch, {})[status] = count
        return result

    def pending(self) -> list[dict[str, Any]]:
        return [
            {
                "id": r[0],
                "watch": r[1],
                "notifier": r[2],
                "url": r[3],
                "attempts": r[4],
                "next_at": r[5],
                "last_error": r[6],
                "title": r[7],
            }
            for r in self._rows(
                "SELECT o.id, o.watch, o.notifier, o.url_label, o.attempts, o.next_at, "
                "o.last_error, m.title FROM outbox o JOIN messages m ON m.id = o.message "
                "WHERE o.status = 'pending' ORDER BY o.id"
            )
        ]
