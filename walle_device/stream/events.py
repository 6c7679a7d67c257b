"""App behaviour events and the sequencer that orders them into the shared log."""

from __future__ import annotations

import json
import math
from typing import Any

KINDS = ("page_enter", "page_exit", "click", "exposure", "scroll", "custom")
KIND_SET = frozenset(KINDS)
#: An event's args, serialised as JSON, may not exceed this many bytes.
MAX_ARGS_BYTES = 1024
#: Page and event ids longer than this are rejected (they are identifiers, not payloads).
MAX_ID_CHARS = 128


# One compact encoder for every event: json.dumps with arguments builds a new one per call.
_ENCODE = json.JSONEncoder(separators=(",", ":")).encode


class EventError(ValueError):
    """An event that cannot enter the log."""


class Event:
    """One app behaviour event, after the sequencer gave it a place in the log."""

    __slots__ = ("args", "event", "kind", "page", "seq", "ts", "visit")

    def __init__(
        self,
        kind: str,
        page: str,
        event: str = "",
        args: dict[str, Any] | None = None,
        ts: int = 0,
        seq: int = -1,
        visit: int | None = None,
    ) -> None:
        self.kind = kind
        self.page = page
        self.event = event
        self.args = args if args is not None else {}
        self.ts = ts
        self.seq = seq
        self.visit = visit

    def to_dict(self) -> dict[str, Any]:
        """The event as a JSON-ready dict."""
        return {
            "seq": self.seq,
            "ts": self.ts,
            "kind": self.kind,
            "page": self.page,
            "event": self.event,
            "args": self.args,
            "visit": self.visit,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Event:
        """Build an event from `to_dict` output (or a raw emit-style dict)."""
        return cls(
            d["kind"],
            d.get("page", ""),
            d.get("event", ""),
            d.get("args") or {},
            int(d.get("ts", 0)),
            int(d.get("seq", -1)),
            d.get("visit"),
        )

    def __repr__(self) -> str:
        return (
            f"Event(seq={self.seq}, ts={self.ts}, {self.kind} page={self.page!r} "
            f"event={self.event!r} visit={self.visit} args={self.args!r})"
        )


def check_event(ev: Event) -> str | None:
    """Raise EventError if the event is malformed; returns its args as JSON (None if empty)."""
    if ev.kind not in KIND_SET:
        raise EventError(f"unknown event kind {ev.kind!r}; use one of {', '.join(KINDS)}")
    if not isinstance(ev.page, str) or len(ev.page) > MAX_ID_CHARS:
        raise EventError(f"page must be a string of at most {MAX_ID_CHARS} characters")
    if not isinstance(ev.event, str) or len(ev.event) > MAX_ID_CHARS:
        raise EventError(f"event must be a string of at most {MAX_ID_CHARS} characters")
    if not isinstance(ev.args, dict):
        raise EventError("args must be a dict")
    ts = ev.ts
    if type(ts) is not int:
        # The log orders by time: a string or NaN timestamp would break every comparison.
        if not isinstance(ts, float) or not math.isfinite(ts):
            raise EventError("ts must be milliseconds since the epoch (an int)")
        ev.ts = int(ts)
    if not ev.args:
        return None
    try:
        text = _ENCODE(ev.args)
    except (TypeError, ValueError) as exc:
        raise EventError(f"args must be JSON-serialisable: {exc}") from exc
    if len(text) > MAX_ARGS_BYTES:
        raise EventError(f"args are {len(text)} bytes; the cap is {MAX_ARGS_BYTES}")
    return text


class Sequencer:
    """Gives events their log sequence number, a monotonic timestamp and their page visit.

    The matcher relies on time never going backwards (within_ms, expiry), so a clock step
    back on the phone is clamped to the last timestamp instead of reordering the log. A page
    visit is identified by the seq of its page_enter; it lasts until its page_exit or the
    next page_enter, and events outside any visit have visit None.
    """

    __slots__ = ("last_ts", "next_seq", "visit")

    def __init__(self, next_seq: int = 0, last_ts: int = 0, visit: int | None = None) -> None:
        self.next_seq = next_seq
        self.last_ts = last_ts
        self.visit = visit

    def stamp(self, ev: Event) -> Event:
        """Assign seq, clamp ts and set the visit of one event, in place."""
        ev.seq = self.next_seq
        self.next_seq += 1
        if ev.ts < self.last_ts:
            ev.ts = self.last_ts
        self.last_ts = ev.ts
        kind = ev.kind
        if kind == "page_enter":
            self.visit = ev.seq
            ev.visit = ev.seq
        elif kind == "page_exit":
            ev.visit = self.visit
            self.visit = None
        else:
            ev.visit = self.visit
        return ev

    def resume_after(self, ev: Event) -> None:
        """Continue numbering after an event replayed from the persisted log."""
        self.next_seq = ev.seq + 1
        self.last_ts = max(self.last_ts, ev.ts)
        self.visit = None if ev.kind == "page_exit" else ev.visit


def sequence(raw: list[dict[str, Any]] | list[Event]) -> list[Event]:
    """Stamp a list of raw events (dicts or Events) as the log would; for tests and benches."""
    seqr = Sequencer()
    out = []
    for r in raw:
        ev = r if isinstance(r, Event) else Event.from_dict(r)
        out.append(seqr.stamp(ev))
    return out
