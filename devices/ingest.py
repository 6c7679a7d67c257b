"""The ingest path: every database write a device causes goes through one writer per process.

Device messages are decoded on the event loop (devices/consumers.py) and put on a bounded
queue. One writer drains it: it waits a few milliseconds for company, takes up to a few
hundred items, and applies them on its own thread in ONE transaction, kind by kind
(`PHASES`), then resolves each item's future on the event loop. The consumer answers a
device only from that future, so an ack always means committed. A queue that is full answers
at once with `Busy` (the device gets an `error` with `retry_after` and sends again): never
silence, never a dropped report.

Why one writer: SQLite has a single writer anyway, and on PostgreSQL one connection per
process doing group commits beats a thread and a transaction per message (bench/README.md,
"Where the time goes"). Handlers of each kind are registered by the app that owns the
meaning (`register`): devices handles auth, presence, hello attributes, run stats and
uploads; releases adds the desired state and reports (devices never imports releases).

If a batch fails as a whole (a database error), its items are applied again one by one in
their own transactions, so one poisonous message costs only itself; an item that still
fails with a database error is answered `Busy` and the device retries.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import DatabaseError, close_old_connections, transaction

from devices.publish import HELD, HeldPublishes

log = logging.getLogger(__name__)

# The order in which kinds are applied inside one batch. A report always names a deployment
# the device learned from an earlier, committed `desired`, so hellos before reports loses no
# ordering; a device's own messages keep their queue order within a kind.
PHASES = ("enroll", "auth", "connect", "hello", "report", "run_stats", "upload", "disconnect")


class Busy(Exception):
    """The server cannot take this message now; the device should send it again later."""

    def __init__(self, retry_after: float, why: str = "the server is busy") -> None:
        super().__init__(f"{why}; send again in {retry_after:.1f} s")
        self.retry_after = retry_after


class Rejected(ValueError):
    """A valid message the server refuses for good (the device must not send it again)."""


@dataclass(eq=False, slots=True)
class Item:
    """One unit of work for the writer: a device message, or an auth/presence step."""

    kind: str
    device: Any
    payload: Any = None
    socket: Any = None
    result: Any = None
    error: BaseException | None = None
    future: asyncio.Future | None = None
    bounded: bool = True


Handler = Callable[[list[Item]], None]
_handlers: dict[str, list[Handler]] = {kind: [] for kind in PHASES}


def register(kind: str, handler: Handler) -> None:
    """Add a batch handler for `kind`; handlers of one kind run in registration order (app
    order in INSTALLED_APPS). A handler sets `item.result` or `item.error` on its items and
    writes only inside the batch's transaction (use `transaction.on_commit` for the rest)."""
    if kind not in _handlers:
        raise ValueError(f"unknown ingest kind {kind!r}; known: {', '.join(PHASES)}")
    if handler not in _handlers[kind]:
        _handlers[kind].append(handler)


def run_handlers(items: list[Item]) -> None:
    """Run the registered handlers over items, kind by kind in PHASES order (no transaction
    of its own: the caller holds one)."""
    by_kind: dict[str, list[Item]] = {}
    for item in items:
        by_kind.setdefault(item.kind, []).append(item)
    for kind in PHASES:
        group = by_kind.get(kind)
        if not group:
            continue
        for handler in _handlers[kind]:
            live = [i for i in group if i.error is None]
            if live:
                handler(live)


def apply_batch(items: list[Item]) -> None:
    """Apply a batch in one transaction (on the writer thread); per item if that fails, so a
    message that breaks a handler (or the database) costs only itself."""
    close_old_connections()
    try:
        try:
            with transaction.atomic():
                run_handlers(items)
            return
        except Exception:
            log.warning("ingest batch of %d failed; applying one by one", len(items), exc_info=True)
        for item in items:
            item.result, item.error = None, None
            try:
                with transaction.atomic():
                    run_handlers([item])
            except DatabaseError as exc:
                log.warning("ingest %s failed: %s", item.kind, exc)
                item.result, item.error = None, Busy(2.0, "the database is busy")
            except Exception as exc:  # a bug: answered "server_error", nothing stored
                log.exception("ingest %s failed", item.kind)
                item.result, item.error = None, exc
    finally:
        # With a connection pool this hands the connection back between batches; a kept
        # SQLite connection stays (CONN_MAX_AGE=None).
        close_old_connections()


class Ingest:
    """The bounded queue and the writer of one event loop (one per server process)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        max_pending: int,
        max_batch: int,
        window_s: float,
    ) -> None:
        self.loop = loop
        self.max_pending = max_pending
        self.max_batch = max_batch
        self.window_s = window_s
        self._items: deque[Item] = deque()
        self._bounded = 0  # device messages waiting (auth/presence steps are not counted)
        self._wakeup = asyncio.Event()
        self._rate = 1000.0  # items per second the writer applied lately (for retry_after)
        self.batches = 0
        self.applied = 0
        self.refused = 0
        self.skipped = 0
        self._writer = loop.create_task(self._run())

    @property
    def pending(self) -> int:
        return len(self._items)

    def retry_after(self) -> float:
        """How long a refused device should wait: the time to drain what is queued now."""
        return round(max(1.0, min(30.0, 2 * self._bounded / max(self._rate, 50.0))), 1)

    def submit(
        self, kind: str, device: Any, payload: Any = None, *, socket: Any = None, bounded=True
    ) -> asyncio.Future:
        """Queue one item; its future resolves to the item after its batch committed.

        Raises Busy when the queue is full (`bounded` items only: presence steps are bounded
        by the number of sockets and are never refused)."""
        if bounded:
            if self._bounded >= self.max_pending:
                self.refused += 1
                raise Busy(self.retry_after(), "the server's ingest queue is full")
            self._bounded += 1
        item = Item(kind=kind, device=device, payload=payload, socket=socket, bounded=bounded)
        item.future = self.loop.create_future()
        self._items.append(item)
        self._wakeup.set()
        return item.future

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._items:
                if len(self._items) < self.max_batch:
                    # A few ms for company: one commit for everything arriving meanwhile.
                    await asyncio.sleep(self.window_s)
                batch = []
                while self._items and len(batch) < self.max_batch:
                    item = self._items.popleft()
                    if item.future.cancelled() or (item.kind == "hello" and _gone(item.socket)):
                        # Nobody waits for the answer any more (a handshake that gave up, a
                        # socket that closed): skipping stale work is what keeps a server
                        # that fell behind in a reconnect storm from staying behind.
                        self.skipped += 1
                        if item.bounded:
                            self._bounded -= 1
                        continue
                    batch.append(item)
                if not batch:
                    continue
                started = time.monotonic()
                held = HeldPublishes()
                try:
                    await self.loop.run_in_executor(_executor(), _apply_holding, batch, held)
                except Exception as exc:  # a bug, not the database: fail these items loudly
                    log.exception("ingest batch failed")
                    for item in batch:
                        item.error = item.error or exc
                elapsed = max(time.monotonic() - started, 1e-3)
                self._rate = 0.8 * self._rate + 0.2 * (len(batch) / elapsed)
                self.batches += 1
                self.applied += len(batch)
                for item in batch:
                    if item.bounded:
                        self._bounded -= 1
                    if not item.future.done():
                        item.future.set_result(item)
                # The consumers woken above answer their devices first (they are ahead in
                # the loop's queue); what the batch published goes out after the acks.
                self.loop.call_soon(held.release)


def _apply_holding(batch: list[Item], held: HeldPublishes) -> None:
    """apply_batch on the writer thread, holding what its commit hooks publish."""
    token = HELD.set(held)
    try:
        apply_batch(batch)
    finally:
        HELD.reset(token)


def _gone(socket: Any) -> bool:
    return socket is not None and getattr(socket, "closed", False)


_pool: ThreadPoolExecutor | None = None
_ingests: dict[asyncio.AbstractEventLoop, Ingest] = {}


def _executor() -> ThreadPoolExecutor:
    # One thread: the single writer. It keeps its database connection between batches.
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="walle-ingest")
    return _pool


def ingest() -> Ingest:
    """The ingest of the running event loop (created on first use)."""
    loop = asyncio.get_running_loop()
    current = _ingests.get(loop)
    if current is None:
        for old in [old for old in _ingests if old.is_closed()]:
            del _ingests[old]  # test runs create and close loops
        current = _ingests[loop] = Ingest(
            loop,
            max_pending=settings.WALLE_INGEST_QUEUE,
            max_batch=settings.WALLE_INGEST_BATCH,
            window_s=settings.WALLE_INGEST_WINDOW_MS / 1000,
        )
    return current
