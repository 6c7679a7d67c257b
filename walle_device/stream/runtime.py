"""The stream processor: a non-blocking emit queue, the shared log, the matcher and fires."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from walle_device.stream.events import Event, EventError, Sequencer, check_event
from walle_device.stream.matcher import Fire, Matcher
from walle_device.stream.naive import Explanation, explain_trigger
from walle_device.stream.spec import compile_trigger
from walle_device.stream.store import EventStore
from walle_device.stream.windows import Ring, Window, aggregate, window_events

__all__ = ["OnFire", "Stream"]

log = logging.getLogger(__name__)

#: on_fire(task_id, fire_seq, window): fire_seq is the seq of the event that completed the
#: match, so it is unique per task and identical when a replay re-delivers the fire.
OnFire = Callable[[str, int, Window], None]


class Stream:
    """One device's stream processor; `emit` from any thread, fires arrive on the worker thread."""

    def __init__(
        self,
        on_fire: OnFire | None = None,
        *,
        state_dir: str | Path | None = None,
        queue_size: int = 10_000,
        ring_size: int = 20_000,
        keep: int = 100_000,
        replay: int = 20_000,
        batch_max: int = 512,
        durable: bool = False,
        max_keys_per_mode: int = 10_000,
        max_partials_per_key: int = 4_096,
    ) -> None:
        self.on_fire = on_fire
        self._qmax = queue_size
        self._q: deque[tuple[Any, ...]] = deque()
        self._wake = threading.Event()
        self._lock = threading.RLock()  # matcher, ring and store belong to whoever holds it
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._busy = False
        self._batch_max = batch_max
        self._replay_n = replay
        self.matcher = Matcher(max_keys_per_mode, max_partials_per_key)
        self.ring = Ring(ring_size)
        self._seqr = Sequencer()
        self._processed = -1
        self._quiet_through = -1  # fires of events up to here were delivered before a restart
        self._recovered = False
        self.store: EventStore | None = None
        if state_dir is not None:
            Path(state_dir).mkdir(parents=True, exist_ok=True)
            self.store = EventStore(Path(state_dir) / "events.sqlite3", keep=keep, durable=durable)
            last = self.store.last()
            if last is not None:
                self._seqr.resume_after(last)
                self.ring = Ring(ring_size, start_seq=self._seqr.next_seq)
        self.emitted = 0
        self.dropped = 0
        self.rejected = 0
        self.processed = 0
        self.fires = 0
        self.callback_errors = 0
        self.errors = 0

    # -- app side -----------------------------------------------------------------------

    def emit(
        self,
        kind: str,
        page: str,
        event: str = "",
        args: dict[str, Any] | None = None,
        ts: int | None = None,
    ) -> bool:
        """Queue one event without blocking; False (and counted) when the queue is full."""
        q = self._q
        if len(q) >= self._qmax:
            self.dropped += 1
            return False
        # A shallow copy, so the app may reuse its dict; nested values must not be mutated.
        q.append(
            (
                kind,
                page,
                event,
                dict(args) if type(args) is dict else args,
                int(time.time() * 1000) if ts is None else ts,
            )
        )
        self.emitted += 1
        if not self._busy:
            self._wake.set()
        return True

    # -- triggers -----------------------------------------------------------------------

    def register_trigger(self, task_id: str, spec: dict[str, Any]) -> None:
        """Activate (or replace) a task's trigger; raises TriggerError with every problem.

        Registering the trigger a task already has changes nothing: its partial matches
        (a visit that began before a reconnect re-delivered the task) stay."""
        trigger = compile_trigger(spec)
        with self._lock:
            current = self.matcher.trigger(task_id)
            if current is not None and current.source == trigger.source:
                return
            since = self._seqr.next_seq
            if self.store is not None:
                # The same trigger re-registered after a restart keeps its original start, so
                # a replay reproduces exactly what the first run saw.
                since = self.store.trigger_since(task_id, trigger.source, since)
            self.matcher.add(task_id, trigger, since_seq=since)

    def remove_trigger(self, task_id: str) -> bool:
        """Deactivate a task's trigger; False when none was registered."""
        with self._lock:
            if self.store is not None:
                self.store.forget_trigger(task_id)
            return self.matcher.remove(task_id)

    # -- lifecycle ----------------------------------------------------------------------

    def recover(self) -> int:
        """Rebuild partial matches by replaying the persisted log tail; returns events replayed.

        Register the active triggers first. Fires of events the previous run had already
        delivered are suppressed; fires of events it logged but had not processed are
        delivered now (at least once; fire_seq makes the redelivery idempotent).
        """
        with self._lock:
            if self._recovered or self.store is None:
                self._recovered = True
                return 0
            self._recovered = True
            tail = self.store.tail(self._replay_n)
            self._quiet_through = self.store.processed_through()
            if not tail:
                self.ring = Ring(self.ring.cap, start_seq=self._seqr.next_seq)
                return 0
            self.ring = Ring(self.ring.cap, start_seq=tail[0].seq)
            for ev in tail:
                self._handle(ev)
            self._seqr.resume_after(tail[-1])
            self._processed = tail[-1].seq
            self.store.mark_processed(self._processed)
            return len(tail)

    def start(self) -> None:
        """Recover, then process events on a daemon worker thread."""
        self.recover()
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="walle-stream", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Drain the queue, persist the processed mark and stop the worker."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.process_pending()
        if self.store is not None:
            self.store.close()
            self.store = None

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued event is processed; True when the queue drained in time."""
        if self._thread is None:
            self.process_pending()
            return True
        deadline = time.monotonic() + timeout
        while self._q or self._busy:
            if time.monotonic() > deadline:
                return False
            self._wake.set()
            time.sleep(0.001)
        return True

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(0.02)
            self._wake.clear()
            try:
                self.process_pending()
            except Exception:
                # E.g. a full disk: keep the worker alive; the batch in hand is lost, counted.
                self.errors += 1
                log.exception("stream batch failed")
                time.sleep(0.5)

    def process_pending(self) -> int:
        """Process everything queued, in batches of one transaction each; returns the count."""
        if not self._recovered:
            self.recover()
        n = 0
        with self._lock:
            self._busy = True
            try:
                while self._q:
                    n += self._batch()
                if n and self.store is not None:
                    # Idle now: record progress so a restart does not redeliver these fires.
                    self.store.mark_processed(self._processed)
            finally:
                self._busy = False
        return n

    def _batch(self) -> int:
        q = self._q
        raw = []
        while q and len(raw) < self._batch_max:
            raw.append(q.popleft())
        batch = []
        texts: list[str | None] = []
        stamp = self._seqr.stamp
        for kind, page, name, args, ts in raw:
            ev = Event(kind, page, name, args, ts)
            try:
                text = check_event(ev)
            except EventError as exc:
                self.rejected += 1
                log.debug("event rejected: %s", exc)
                continue
            batch.append(stamp(ev))
            texts.append(text)
        if not batch:
            return len(raw)
        if self.store is not None:
            # The log is written before matching: after a crash it is the source of truth.
            self.store.commit_batch(batch, processed_through=self._processed, args_json=texts)
        for ev in batch:
            self._handle(ev)
        self._processed = batch[-1].seq
        return len(raw)

    def _handle(self, ev: Event) -> None:
        self.ring.append(ev)
        self.processed += 1
        fires = self.matcher.process(ev)
        if fires and ev.seq > self._quiet_through:
            for f in fires:
                self._deliver(f, ev)

    def _deliver(self, f: Fire, ev: Event) -> None:
        trig = self.matcher.trigger(f.task_id)
        if trig is None:
            return
        events = window_events(self.ring, trig.window, ev, f.start_seq)
        aggs = aggregate(events, trig.aggregates) if trig.aggregates else {}
        self.fires += 1
        if self.on_fire is None:
            return
        try:
            self.on_fire(
                f.task_id, f.seq, Window(events, f.task_id, f.seq, f.start_seq, f.key, aggs)
            )
        except Exception:
            # One task's broken callback must not stop the stream for every other task.
            self.callback_errors += 1
            log.exception("on_fire for task %s failed", f.task_id)

    # -- tools --------------------------------------------------------------------------

    def explain(self, task_id: str, last_n: int = 1_000) -> Explanation:
        """Replay the recent log through one trigger and say why it did or did not fire."""
        with self._lock:
            trig = self.matcher.trigger(task_id)
            events = self.ring.slice(self.ring.next_seq - last_n, self.ring.next_seq - 1)
            if trig is None:
                ex = Explanation(task_id, len(events))
                ex.notes.append(
                    f"no trigger is registered for task {task_id!r}; "
                    f"registered: {', '.join(sorted(self.matcher.tasks())) or 'none'}"
                )
                return ex
            return explain_trigger(task_id, trig, events, self.matcher.since_seq(task_id))

    def stats(self) -> dict[str, Any]:
        """Counters for monitoring: emitted, dropped, rejected, processed, fires, queue, matcher."""
        with self._lock:  # the matcher's dicts change under the worker
            matcher = self.matcher.stats()
        return {
            "emitted": self.emitted,
            "dropped": self.dropped,
            "rejected": self.rejected,
            "processed": self.processed,
            "fires": self.fires,
            "callback_errors": self.callback_errors,
            "errors": self.errors,
            "queued": len(self._q),
            "next_seq": self._seqr.next_seq,
            "matcher": matcher,
        }
