"""SQLite (WAL) persistence of the event log, with one transaction per batch (group commit)."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

from walle_device.stream.events import Event

__all__ = ["EventStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, kind TEXT NOT NULL, page TEXT NOT NULL,
    event TEXT NOT NULL, visit INTEGER, args TEXT
);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS triggers (
    task_id TEXT PRIMARY KEY, source TEXT NOT NULL, since_seq INTEGER NOT NULL
);
"""


class EventStore:
    """The durable event log: the source of truth the matcher is rebuilt from after a restart.

    synchronous=NORMAL in WAL mode survives a killed process (what phones do to apps) and
    costs one fsync per checkpoint rather than per batch; `durable=True` adds an fsync per
    batch for power loss.
    """

    def __init__(self, path: str | Path, keep: int = 100_000, durable: bool = False) -> None:
        self.path = Path(path)
        self.keep = keep
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self._db.executescript(_SCHEMA)
        self._batches = 0

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    def commit_batch(
        self,
        events: list[Event],
        processed_through: int | None = None,
        args_json: list[str | None] | None = None,
    ) -> None:
        """Append a batch of stamped events (and the processed mark) in one transaction."""
        if args_json is None:
            args_json = [json.dumps(e.args) if e.args else None for e in events]
        rows = [
            (e.seq, e.ts, e.kind, e.page, e.event, e.visit, a)
            for e, a in zip(events, args_json, strict=True)
        ]
        with self._lock:
            db = self._db
            db.execute("BEGIN")
            try:
                db.executemany("INSERT OR REPLACE INTO events VALUES (?,?,?,?,?,?,?)", rows)
                if processed_through is not None:
                    db.execute(
                        "INSERT OR REPLACE INTO meta VALUES ('processed', ?)", (processed_through,)
                    )
                self._batches += 1
                # Trim now and then rather than per batch: a range delete on the primary key
                # is cheap, but not free.
                if events and self._batches % 64 == 0:
                    db.execute("DELETE FROM events WHERE seq <= ?", (events[-1].seq - self.keep,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def mark_processed(self, seq: int) -> None:
        """Record that fires of every event up to seq were delivered."""
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('processed', ?)", (seq,))

    def processed_through(self) -> int:
        """The last seq whose fires were delivered, or -1."""
        with self._lock:
            row = self._db.execute("SELECT v FROM meta WHERE k='processed'").fetchone()
        return -1 if row is None else int(row[0])

    def last(self) -> Event | None:
        """The newest persisted event."""
        rows = self._select("SELECT * FROM events ORDER BY seq DESC LIMIT 1", ())
        return rows[0] if rows else None

    def tail(self, n: int) -> list[Event]:
        """The newest n persisted events, oldest first."""
        rows = self._select("SELECT * FROM events ORDER BY seq DESC LIMIT ?", (n,))
        rows.reverse()
        return rows

    def _select(self, sql: str, params: tuple[int, ...]) -> list[Event]:
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        return [
            Event(kind, page, event, json.loads(args) if args else {}, ts, seq, visit)
            for seq, ts, kind, page, event, visit, args in rows
        ]

    def count(self) -> int:
        """How many events are persisted."""
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def trigger_since(self, task_id: str, source: str, default: int) -> int:
        """The since-seq recorded for this exact trigger, recording default if it is new."""
        with self._lock:
            row = self._db.execute(
                "SELECT source, since_seq FROM triggers WHERE task_id=?", (task_id,)
            ).fetchone()
            if row is not None and row[0] == source:
                return int(row[1])
            self._db.execute(
                "INSERT OR REPLACE INTO triggers VALUES (?,?,?)", (task_id, source, default)
            )
            return default

    def forget_trigger(self, task_id: str) -> None:
        """Drop a removed trigger's registration record."""
        with self._lock:
            self._db.execute("DELETE FROM triggers WHERE task_id=?", (task_id,))
