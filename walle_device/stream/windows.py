"""Window views over the shared event log, aggregates, and keyed state with a TTL and byte caps."""

from __future__ import annotations

import json
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

from walle_device.stream.events import Event

__all__ = ["KeyedState", "Ring", "StateError", "Window", "aggregate", "window_events"]


class Ring:
    """The bounded in-memory tail of the event log, addressable by seq in O(1)."""

    __slots__ = ("_buf", "_lo", "cap", "next_seq")

    def __init__(self, cap: int, start_seq: int = 0) -> None:
        self.cap = cap
        self._buf: list[Event | None] = [None] * cap
        self._lo = start_seq  # nothing older was ever appended (e.g. the first replayed seq)
        self.next_seq = start_seq

    def append(self, ev: Event) -> None:
        """Add the next event (seqs must be consecutive)."""
        self._buf[ev.seq % self.cap] = ev
        self.next_seq = ev.seq + 1

    @property
    def first_seq(self) -> int:
        """The oldest seq still held."""
        return max(self._lo, self.next_seq - self.cap)

    def __len__(self) -> int:
        return self.next_seq - self.first_seq

    def get(self, seq: int) -> Event | None:
        """The event with this seq, or None when it left the ring."""
        if self.first_seq <= seq < self.next_seq:
            return self._buf[seq % self.cap]
        return None

    def slice(self, lo: int, hi: int) -> list[Event]:
        """Events with lo <= seq <= hi that are still held, in order."""
        lo = max(lo, self.first_seq)
        hi = min(hi, self.next_seq - 1)
        buf, cap = self._buf, self.cap
        return [buf[s % cap] for s in range(lo, hi + 1)]  # type: ignore[misc]

    def first_at_or_after(self, ts: int, hi: int) -> int:
        """The smallest held seq <= hi whose ts >= ts (log timestamps never decrease)."""
        lo = self.first_seq
        buf, cap = self._buf, self.cap
        end = hi + 1
        while lo < end:
            mid = (lo + end) // 2
            if buf[mid % cap].ts < ts:  # type: ignore[union-attr]
                lo = mid + 1
            else:
                end = mid
        return lo

    def __iter__(self) -> Iterator[Event]:
        return iter(self.slice(self.first_seq, self.next_seq - 1))


def window_events(ring: Ring, spec: dict[str, Any], fire: Event, start_seq: int) -> list[Event]:
    """The events a fired trigger's window covers, ending with the firing event."""
    t = spec.get("type", "since_start")
    seq = fire.seq
    if t == "since_start":
        return ring.slice(start_seq, seq)
    if t == "session":
        # A visit's id is the seq of its page_enter and its events are contiguous.
        return ring.slice(fire.visit, seq) if fire.visit is not None else [fire]
    if t == "last_n":
        return ring.slice(seq - spec["n"] + 1, seq)
    if t == "last_ms":
        return ring.slice(ring.first_at_or_after(fire.ts - spec["ms"], seq), seq)
    if t == "tumbling":
        size = spec["size_ms"]
        return ring.slice(ring.first_at_or_after(fire.ts // size * size, seq), seq)
    if t == "hopping":
        # The oldest hop-aligned window that still contains the firing event.
        size, hop = spec["size_ms"], spec["hop_ms"]
        start = (fire.ts - size) // hop * hop + hop
        return ring.slice(ring.first_at_or_after(start, seq), seq)
    raise ValueError(f"unknown window type {t!r}")


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _hashable(v: Any) -> Any:
    return (
        v if isinstance(v, (str, int, float, bool, type(None))) else json.dumps(v, sort_keys=True)
    )


def aggregate(
    events: list[Event], aggs: list[dict[str, Any]] | tuple[dict[str, Any], ...]
) -> dict[str, Any]:
    """Compute each aggregate spec (count/sum/min/max/distinct/last_k/top_k) over events."""
    out: dict[str, Any] = {}
    for a in aggs:
        op, arg, name = a["op"], a.get("arg"), a["name"]
        if op == "count":
            out[name] = len(events) if arg is None else sum(1 for e in events if arg in e.args)
            continue
        vals = [e.args[arg] for e in events if arg in e.args]
        if op in ("sum", "min", "max"):
            nums = [v for v in vals if _num(v)]
            if op == "sum":
                out[name] = sum(nums)
            else:
                out[name] = (min if op == "min" else max)(nums) if nums else None
        elif op == "distinct":
            out[name] = len({_hashable(v) for v in vals})
        elif op == "last_k":
            out[name] = vals[-a["k"] :]
        elif op == "top_k":
            counts = Counter(_hashable(v) for v in vals)
            first: dict[Any, int] = {}
            for i, v in enumerate(vals):
                first.setdefault(_hashable(v), i)
            # Ties go to the value seen first, so the result does not depend on hashing.
            ranked = sorted(counts.items(), key=lambda kv: (-kv[1], first[kv[0]]))
            out[name] = [[v, n] for v, n in ranked[: a["k"]]]
    return out


class Window(list[Event]):
    """The events a fired trigger hands to its task, plus the match and its aggregates."""

    def __init__(
        self,
        events: list[Event],
        task_id: str,
        fire_seq: int,
        start_seq: int,
        key: Any,
        aggregates: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(events)
        self.task_id = task_id
        self.fire_seq = fire_seq
        self.start_seq = start_seq
        self.key = key
        self.aggregates = aggregates or {}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for the VM boundary, which passes bytes)."""
        return {
            "task_id": self.task_id,
            "fire_seq": self.fire_seq,
            "start_seq": self.start_seq,
            "key": self.key if isinstance(self.key, (str, int, float, bool, type(None))) else None,
            "aggregates": self.aggregates,
            "events": [e.to_dict() for e in self],
        }


class StateError(ValueError):
    """A value that cannot be stored in keyed state."""


class KeyedState:
    """A task's key -> JSON value store with a TTL per entry and byte caps per key and in total.

    Sizes are measured as compact JSON so the caps mean the same on every device; when the
    total cap is hit the least recently written keys go first, and `evicted` counts them.
    """

    def __init__(
        self,
        ttl_ms: int | None = 24 * 3600 * 1000,
        max_value_bytes: int = 16 * 1024,
        max_bytes: int = 1024 * 1024,
        clock: Callable[[], int] | None = None,
    ) -> None:
        self.ttl_ms = ttl_ms
        self.max_value_bytes = max_value_bytes
        self.max_bytes = max_bytes
        self._clock = clock or (lambda: int(time.time() * 1000))
        self._data: OrderedDict[str, tuple[Any, int, int]] = OrderedDict()  # key -> (v, size, t)
        self.bytes = 0
        self.evicted = 0
        self.expired = 0

    def _now(self, now: int | None) -> int:
        return self._clock() if now is None else now

    def _live(self, key: str, now: int) -> tuple[Any, int, int] | None:
        item = self._data.get(key)
        if item is None:
            return None
        if self.ttl_ms is not None and now - item[2] > self.ttl_ms:
            self._remove(key)
            self.expired += 1
            return None
        return item

    def _remove(self, key: str) -> None:
        _, size, _ = self._data.pop(key)
        self.bytes -= size

    def get(self, key: str, default: Any = None, now: int | None = None) -> Any:
        """The value under key, or default when absent or expired."""
        item = self._live(key, self._now(now))
        return default if item is None else json.loads(json.dumps(item[0]))

    def put(self, key: str, value: Any, now: int | None = None) -> None:
        """Store a JSON value; raises StateError when it exceeds the per-key cap."""
        if not isinstance(key, str):
            raise StateError("state keys are strings")
        try:
            size = len(key) + len(json.dumps(value, separators=(",", ":")))
        except (TypeError, ValueError) as exc:
            raise StateError(f"state values must be JSON-serialisable: {exc}") from exc
        if size > self.max_value_bytes:
            raise StateError(
                f"value for {key!r} is {size} bytes; the per-key cap is {self.max_value_bytes}"
            )
        t = self._now(now)
        if key in self._data:
            self._remove(key)
        self._data[key] = (json.loads(json.dumps(value)), size, t)
        self.bytes += size
        while self.bytes > self.max_bytes:
            self._remove(next(iter(self._data)))
            self.evicted += 1

    def incr(self, key: str, by: float = 1, now: int | None = None) -> float:
        """Add to a numeric value (0 when absent) and return the new value."""
        t = self._now(now)
        value = self.get(key, 0, now=t) + by
        self.put(key, value, now=t)
        return value

    def delete(self, key: str) -> bool:
        """Remove a key; False when it was absent."""
        if key in self._data:
            self._remove(key)
            return True
        return False

    def sweep(self, now: int | None = None) -> int:
        """Drop every expired entry; returns how many."""
        if self.ttl_ms is None:
            return 0
        t = self._now(now)
        dead = [k for k, (_, _, w) in self._data.items() if t - w > self.ttl_ms]
        for k in dead:
            self._remove(k)
        self.expired += len(dead)
        return len(dead)

    def keys(self, now: int | None = None) -> list[str]:
        """The live keys, least recently written first."""
        self.sweep(now)
        return list(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def snapshot(self) -> dict[str, Any]:
        """The entries as JSON-ready data, oldest write first, for persisting between runs."""
        return {"entries": [[k, v, t] for k, (v, _, t) in self._data.items()]}

    def restore(self, data: dict[str, Any]) -> None:
        """Load a snapshot (replacing current entries); caps and the TTL apply as on put."""
        self._data.clear()
        self.bytes = 0
        for key, value, t in data.get("entries", []):
            try:
                self.put(key, value, now=t)
            except StateError:
                self.evicted += 1  # a smaller cap than when it was written: drop, count
