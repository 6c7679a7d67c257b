"""A per-trigger loop with the trie's semantics: the benchmark baseline and `explain`'s engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from walle_device.stream.events import Event
from walle_device.stream.matcher import MISSING, Fire, key_of
from walle_device.stream.spec import Trigger

__all__ = ["Explanation", "NaiveMatcher", "explain_trigger"]

Start = tuple[int, int]


def _advance(t: Trigger, st: dict[int, Start] | None, ev: Event) -> tuple[dict[int, Start], bool]:
    """One trigger's step: the new latest start per matched-step count, and whether to kill."""
    steps = t.steps
    new: dict[int, Start] = {}
    k, p, e, a = ev.kind, ev.page, ev.event, ev.args
    if st:
        for i, s in st.items():
            if steps[i].matches(k, p, e, a) and (
                t.within_ms is None or ev.ts - s[0] <= t.within_ms
            ):
                cur = new.get(i + 1)
                if cur is None or cur < s:
                    new[i + 1] = s
    if steps[0].matches(k, p, e, a):
        new[1] = (ev.ts, ev.seq)
    kill = t.strict or (t.guard is not None and t.guard.matches(k, p, e, a))
    return new, kill


class NaiveMatcher:
    """Each trigger keeps its own latest start per (key, steps matched); every event visits all."""

    def __init__(self) -> None:
        self._trigs: dict[str, tuple[Trigger, int, dict[Any, dict[int, Start]]]] = {}

    def add(self, task_id: str, trigger: Trigger, since_seq: int = 0) -> None:
        """Register (or replace) a task's trigger."""
        self._trigs[task_id] = (trigger, since_seq, {})

    def remove(self, task_id: str) -> bool:
        """Unregister a task's trigger."""
        return self._trigs.pop(task_id, None) is not None

    def process(self, ev: Event) -> list[Fire]:
        """Advance every trigger by one event; returns the fires sorted by task id."""
        fires: list[Fire] = []
        for task_id, (t, since, states) in self._trigs.items():
            key = key_of(t.key, ev)
            if key is MISSING:
                continue
            st = states.get(key)
            new, kill = _advance(t, st, ev)
            n = len(t.steps)
            done = new.pop(n, None)
            if done is not None and done[1] >= since:
                fires.append(Fire(task_id, ev.seq, done[1], done[0], key))
            if kill or st is None:
                if new:
                    states[key] = new
                else:
                    states.pop(key, None)
            else:
                for i, s in new.items():
                    if st.get(i, (-1, -1)) < s:
                        st[i] = s
            if t.key == "visit" and ev.kind == "page_exit":
                states.pop(key, None)
        fires.sort()
        return fires


@dataclass
class Explanation:
    """Why a trigger did or did not fire over a stretch of the log."""

    task_id: str
    events: int
    fired: list[int] = field(default_factory=list)
    deepest: int = 0
    steps: list[dict[str, int]] = field(default_factory=list)
    killed: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "task_id": self.task_id,
            "events": self.events,
            "fired": self.fired,
            "deepest": self.deepest,
            "steps": self.steps,
            "killed": self.killed,
            "notes": self.notes,
        }

    def __str__(self) -> str:
        lines = [
            f"trigger of {self.task_id}: replayed {self.events} events, "
            f"fired {len(self.fired)} time(s)"
            + (f" (at seq {', '.join(map(str, self.fired[:10]))})" if self.fired else "")
        ]
        for i, s in enumerate(self.steps):
            lines.append(
                f"  step {i + 1}: {s['shape']} events matched kind/page/event, "
                f"{s['args']} also passed the predicates, {s['keyed']} had the key, "
                f"{s['advanced']} advanced a match"
            )
        lines.append(f"  deepest progress: {self.deepest}/{len(self.steps)} steps")
        for reason, n in self.killed.items():
            if n:
                lines.append(f"  {n} partial match(es) ended by {reason}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


def explain_trigger(
    task_id: str, t: Trigger, events: list[Event], since_seq: int = 0
) -> Explanation:
    """Replay events through one trigger, counting what matched and what ended each match."""
    ex = Explanation(task_id, len(events))
    ex.steps = [{"shape": 0, "args": 0, "keyed": 0, "advanced": 0} for _ in t.steps]
    ex.killed = {"within_ms": 0, "strict contiguity": 0, "not_between": 0, "visit end": 0}
    states: dict[Any, dict[int, Start]] = {}
    n = len(t.steps)
    for ev in events:
        key = key_of(t.key, ev)
        for i, p in enumerate(t.steps):
            if p.shape_matches(ev.kind, ev.page, ev.event):
                ex.steps[i]["shape"] += 1
                if not p.where or p.check_args(ev.args):
                    ex.steps[i]["args"] += 1
                    if key is not MISSING:
                        ex.steps[i]["keyed"] += 1
        if key is MISSING:
            continue
        st = states.get(key)
        if st and t.within_ms is not None:
            for i, s in list(st.items()):
                if ev.ts - s[0] > t.within_ms:
                    del st[i]
                    ex.killed["within_ms"] += 1
        new, kill = _advance(t, st, ev)
        for i in new:
            ex.steps[i - 1]["advanced"] += 1
            ex.deepest = max(ex.deepest, i)
        done = new.pop(n, None)
        if done is not None:
            if done[1] >= since_seq:
                ex.fired.append(ev.seq)
            else:
                ex.notes.append(f"match ending at seq {ev.seq} began before registration")
        if kill and st:
            lost = len(set(st) - set(new))
            ex.killed["strict contiguity" if t.strict else "not_between"] += lost
        if kill or st is None:
            states[key] = new
        else:
            for i, s in new.items():
                if st.get(i, (-1, -1)) < s:
                    st[i] = s
        if t.key == "visit" and ev.kind == "page_exit":
            ex.killed["visit end"] += len(states.pop(key, {}))
    if not events:
        ex.notes.append("no events in the log yet")
    elif not ex.fired:
        for i, s in enumerate(ex.steps):
            if s["advanced"] == 0:
                why = (
                    "no event had its kind/page/event"
                    if s["shape"] == 0
                    else "its predicates never held"
                    if s["args"] == 0
                    else "no matching event carried the correlation key"
                    if s["keyed"] == 0
                    else "no matching event came after the previous step (same key, in time)"
                )
                ex.notes.append(f"step {i + 1} never advanced: {why}")
                break
    return ex
