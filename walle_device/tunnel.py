"""The device-side tunnel: a durable SQLite outbox of task results and the loop that uploads them.

Delivery is at least once from here and exactly once after the cloud deduplicates by key:
a result's key is a hash of device, task, version and fire sequence, so a fire replayed after
a crash, a batch resent after a lost ack, and an enqueue repeated by a restarted task all
carry the same key. Rows leave the outbox only when the cloud acks their key.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

__all__ = ["LANES", "Send", "Tunnel", "TunnelError", "result_key"]

log = logging.getLogger(__name__)

LANES = ("realtime", "bulk")

#: The transport: upload a batch of items ({"key", "task", "version", "payload"}) and return
#: the keys the cloud acknowledged (stored now or already stored before).
Send = Callable[[list[dict[str, Any]]], Awaitable[list[str]]]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    task TEXT NOT NULL,
    version INTEGER NOT NULL,
    fire_seq INTEGER NOT NULL,
    lane TEXT NOT NULL,
    payload TEXT NOT NULL,
    size INTEGER NOT NULL,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_lane ON outbox (lane, id);
CREATE TABLE IF NOT EXISTS acked (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS fires (
    task TEXT NOT NULL,
    fire_seq INTEGER NOT NULL,
    window TEXT NOT NULL,
    PRIMARY KEY (task, fire_seq)
);
"""


#: Largest one result may be once JSON-encoded (the VM caps a run's uploads below it).
MAX_ITEM_BYTES = 192 * 1024


class TunnelError(ValueError):
    """A result the tunnel refuses (bad lane, unserialisable or oversized payload)."""


def result_key(device_id: str, task: str, version: int, fire_seq: int) -> str:
    """The idempotency key of one result: sha256 over device, task, version and fire seq."""
    raw = "\x1f".join((device_id, task, str(version), str(fire_seq)))
    return hashlib.sha256(raw.encode()).hexdigest()


class Tunnel:
    """A bounded outbox with a realtime lane (sent at once) and a bulk lane (sent in batches)."""

    def __init__(
        self,
        path: str | Path,
        device_id: str,
        *,
        max_items: int = 10_000,
        max_bytes: int = 32 * 1024 * 1024,
        max_item_bytes: int = MAX_ITEM_BYTES,
        batch_bytes: int = 192 * 1024,
        bulk_items: int = 64,
        bulk_bytes: int = 64 * 1024,
        bulk_delay_s: float = 5.0,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 60.0,
        send_timeout_s: float = 10.0,
        remember_acked: int = 50_000,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        path = Path(path)
        if path.suffix == "" or path.is_dir():
            path.mkdir(parents=True, exist_ok=True)
            path = path / "outbox.sqlite3"
        self.path = path
        self.device_id = device_id
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.max_item_bytes = max_item_bytes
        self.batch_bytes = batch_bytes
        self.bulk_items = bulk_items
        self.bulk_bytes = bulk_bytes
        self.bulk_delay_s = bulk_delay_s
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.send_timeout_s = send_timeout_s
        self.remember_acked = remember_acked
        self._clock = clock
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL survives a killed process; results are small and the cloud dedups anyway.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        n, b = self._db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outbox").fetchone()
        self._items, self._bytes = int(n), int(b)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._flush = False
        self.sent = 0
        self.acked = 0
        self.failures = 0

    # -- producer side (any thread) -----------------------------------------------------

    def key(self, task: str, version: int, fire_seq: int) -> str:
        """The idempotency key this device uses for a result."""
        return result_key(self.device_id, task, version, fire_seq)

    def enqueue(
        self,
        task: str,
        version: int,
        fire_seq: int,
        payload: Any,
        lane: str = "realtime",
    ) -> str | None:
        """Durably queue a result; returns its key, or None if that key was already queued or acked."""
        if lane not in LANES:
            raise TunnelError(f"lane must be one of {', '.join(LANES)}, not {lane!r}")
        try:
            text = json.dumps(payload, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise TunnelError(f"payload must be JSON-serialisable: {exc}") from exc
        size = len(text.encode())
        if size > self.max_item_bytes:
            raise TunnelError(
                f"payload is {size} bytes; the cap is {self.max_item_bytes}: "
                "send a summary, or split it over several results"
            )
        key = self.key(task, version, fire_seq)
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                queued = self._insert(key, task, version, fire_seq, lane, text, size)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        if queued:
            self._notify()
        return key if queued else None

    def _insert(
        self, key: str, task: str, version: int, fire_seq: int, lane: str, text: str, size: int
    ) -> bool:
        """Insert one outbox row inside the caller's transaction; False if known already."""
        db = self._db
        if db.execute("SELECT 1 FROM acked WHERE key=?", (key,)).fetchone():
            return False
        cur = db.execute(
            "INSERT OR IGNORE INTO outbox (key, task, version, fire_seq, lane, payload,"
            " size, created) VALUES (?,?,?,?,?,?,?,?)",
            (key, task, version, fire_seq, lane, text, size, self._clock()),
        )
        if cur.rowcount == 0:
            return False
        self._items += 1
        self._bytes += size
        self._enforce_bounds()
        return True

    # -- fires: a trigger fire is durable from the moment the stream hands it over ---------

    def accept_fire(self, task: str, fire_seq: int, window: dict[str, Any]) -> None:
        """Record a fire before its run, so a crash between the fire and the result re-runs it."""
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO fires (task, fire_seq, window) VALUES (?,?,?)",
                (task, fire_seq, json.dumps(window, separators=(",", ":"))),
            )

    def pending_fires(self) -> list[tuple[str, int, dict[str, Any]]]:
        """Fires accepted but not completed (the process stopped in between), oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT task, fire_seq, window FROM fires ORDER BY fire_seq"
            ).fetchall()
        return [(task, seq, json.loads(window)) for task, seq, window in rows]

    def complete_fire(
        self, task: str, version: int, fire_seq: int, payload: Any = None, lane: str = "realtime"
    ) -> str | None:
        """Queue a fire's result (if any) and forget the fire, in one transaction: after a
        crash either both happened or neither, so a result is never lost nor queued twice."""
        text, size = "", 0
        if payload is not None:
            if lane not in LANES:
                raise TunnelError(f"lane must be one of {', '.join(LANES)}, not {lane!r}")
            text = json.dumps(payload, separators=(",", ":"))
            size = len(text.encode())
            if size > self.max_item_bytes:
                raise TunnelError(f"payload is {size} bytes; the cap is {self.max_item_bytes}")
        key = self.key(task, version, fire_seq)
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                queued = payload is not None and self._insert(
                    key, task, version, fire_seq, lane, text, size
                )
                db.execute("DELETE FROM fires WHERE task=? AND fire_seq=?", (task, fire_seq))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        if queued:
            self._notify()
        return key if queued else None

    def _enforce_bounds(self) -> None:
        db = self._db
        dropped = 0
        while self._items > self.max_items or self._bytes > self.max_bytes:
            # Bulk results are the ones a product can most afford to lose; oldest go first.
            row = (
                db.execute(
                    "SELECT id, size FROM outbox WHERE lane='bulk' ORDER BY id LIMIT 1"
                ).fetchone()
                or db.execute("SELECT id, size FROM outbox ORDER BY id LIMIT 1").fetchone()
            )
            if row is None:
                break
            db.execute("DELETE FROM outbox WHERE id=?", (row[0],))
            self._items -= 1
            self._bytes -= row[1]
            dropped += 1
        if dropped:
            db.execute(
                "INSERT INTO meta VALUES ('dropped', ?) ON CONFLICT(k) DO UPDATE SET v = v + ?",
                (dropped, dropped),
            )

    def _notify(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(wake.set)
            except RuntimeError:
                pass  # the loop is shutting down; the next run() picks the row up

    def flush_soon(self) -> None:
        """Send bulk items at the next pass without waiting for a full batch (e.g. on shutdown)."""
        self._flush = True
        self._notify()

    # -- sender side (one asyncio task) -------------------------------------------------

    def _take(self, now: float) -> list[tuple[Any, ...]]:
        db = self._db
        cols = "id, key, task, version, payload, size, attempts"
        rows = db.execute(
            f"SELECT {cols} FROM outbox WHERE lane='realtime' AND next_at<=? ORDER BY id LIMIT 500",
            (now,),
        ).fetchall()
        n, b, oldest = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0), MIN(created) FROM outbox"
            " WHERE lane='bulk' AND next_at<=?",
            (now,),
        ).fetchone()
        bulk_due = n and (
            self._flush
            or n >= self.bulk_items
            or b >= self.bulk_bytes
            or now - oldest >= self.bulk_delay_s
            or rows  # a realtime send is going out anyway: let due bulk items ride along
        )
        if bulk_due:
            rows += db.execute(
                f"SELECT {cols} FROM outbox WHERE lane='bulk' AND next_at<=? ORDER BY id LIMIT 500",
                (now,),
            ).fetchall()
        batch, total = [], 0
        for r in rows:
            if batch and total + r[5] > self.batch_bytes:
                break
            batch.append(r)
            total += r[5]
        if not rows or len(batch) == len(rows):
            self._flush = False
        return batch

    def _next_due_in(self, now: float) -> float:
        with self._lock:
            rt = self._db.execute(
                "SELECT MIN(next_at) FROM outbox WHERE lane='realtime'"
            ).fetchone()[0]
            bulk = self._db.execute(
                "SELECT MIN(MAX(next_at, created + ?)) FROM outbox WHERE lane='bulk'",
                (self.bulk_delay_s,),
            ).fetchone()[0]
        due = min(x for x in (rt, bulk, now + 3600) if x is not None)
        return max(0.0, due - now)

    async def send_once(self, send: Send) -> int:
        """Send one due batch (if any) and apply its acks; returns how many items were sent."""
        now = self._clock()
        with self._lock:
            batch = self._take(now)
        if not batch:
            return 0
        items = [
            {"key": r[1], "task": r[2], "version": r[3], "payload": json.loads(r[4])} for r in batch
        ]
        self.sent += len(items)
        try:
            acks = await asyncio.wait_for(send(items), self.send_timeout_s)
            acked = {k for k in acks if isinstance(k, str)} if acks else set()
        except Exception as exc:  # any transport failure means "not acked": retry later
            self.failures += 1
            log.info("upload of %d item(s) failed: %r", len(items), exc)
            acked = set()
        self._settle(batch, acked)
        return len(items)

    def _settle(self, batch: list[tuple[Any, ...]], acked: set[str]) -> None:
        now = self._clock()
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                for rid, key, _t, _v, _p, size, attempts in batch:
                    if key in acked:
                        cur = db.execute("DELETE FROM outbox WHERE id=?", (rid,))
                        if cur.rowcount:
                            self._items -= 1
                            self._bytes -= size
                            self.acked += 1
                        db.execute("INSERT OR IGNORE INTO acked (key) VALUES (?)", (key,))
                    else:
                        # Exponential backoff with full jitter: a fleet that lost the cloud
                        # at the same moment does not come back in lockstep.
                        ceiling = min(self.backoff_cap_s, self.backoff_base_s * 2**attempts)
                        db.execute(
                            "UPDATE outbox SET attempts=?, next_at=? WHERE id=?",
                            (attempts + 1, now + self._rng.uniform(0, ceiling), rid),
                        )
                db.execute(
                    "DELETE FROM acked WHERE id <= (SELECT MAX(id) FROM acked) - ?",
                    (self.remember_acked,),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    async def run(self, send: Send, stop: asyncio.Event | None = None) -> None:
        """The sender loop: send due batches until stop is set (or the task is cancelled)."""
        self._loop = asyncio.get_running_loop()
        self._wake = wake = asyncio.Event()
        stop = stop or asyncio.Event()
        try:
            while not stop.is_set():
                # Clear before looking, so an enqueue during the send is not missed.
                wake.clear()
                if await self.send_once(send):
                    continue
                delay = min(1.0, self._next_due_in(self._clock()))
                waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop.wait())]
                try:
                    await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waiters:
                        w.cancel()
        finally:
            self._loop = None
            self._wake = None

    async def drain(self, send: Send, timeout: float = 30.0) -> bool:
        """Send until the outbox is empty, ignoring bulk batching; True when it emptied in time."""
        deadline = time.monotonic() + timeout
        self._flush = True
        while self.pending():
            self._flush = True
            if not await self.send_once(send):
                if time.monotonic() > deadline:
                    return False
                await asyncio.sleep(min(0.05, self._next_due_in(self._clock())))
        return True

    # -- introspection ------------------------------------------------------------------

    def pending(self, lane: str | None = None) -> int:
        """Items waiting in the outbox (in one lane, or both)."""
        with self._lock:
            if lane is None:
                return self._items
            return int(
                self._db.execute("SELECT COUNT(*) FROM outbox WHERE lane=?", (lane,)).fetchone()[0]
            )

    def dropped(self) -> int:
        """Items dropped by the outbox bound since the outbox was created."""
        with self._lock:
            row = self._db.execute("SELECT v FROM meta WHERE k='dropped'").fetchone()
        return 0 if row is None else int(row[0])

    def stats(self) -> dict[str, int]:
        """Counters for monitoring."""
        return {
            "pending": self._items,
            "pending_bytes": self._bytes,
            "sent": self.sent,
            "acked": self.acked,
            "failures": self.failures,
            "dropped": self.dropped(),
        }

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
