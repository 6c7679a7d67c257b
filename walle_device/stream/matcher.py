"""The shared-trie matcher: every active trigger in one trie, advanced event by event.

Semantics (the oracle tests pin them): a trigger fires at event e when its steps are matched
by events e1 < e2 < ... < ek = e that share one correlation key, with ts(ek) - ts(e1) <=
within_ms, with no other same-key event between e1 and ek under strict contiguity, and no
same-key event matching not_between strictly between them (the matched events themselves
are allowed to match the guard). A trigger therefore fires at most once per event.

Triggers with the same contiguity, key and guard form a *mode* and share one trie, so equal
step prefixes share nodes. For each (mode, key) the matcher keeps one partial match per
trie node: the latest start. A later start dominates an earlier one for every trigger below
the node (it has more of its within_ms left and fewer events in its span that could break
strict contiguity or hit the guard), so dropping the earlier start never loses a fire, and
memory is bounded by nodes x keys. Partial matches are indexed by the (kind, page, event)
their outgoing edges wait for, so an event touches only the partials that can advance.
All time is event time, so replaying the log reproduces the same state and fires.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any, NamedTuple

from walle_device.stream.events import Event
from walle_device.stream.spec import Pattern, Trigger

__all__ = ["MISSING", "Fire", "Matcher", "key_of"]

INF = float("inf")
MISSING: Any = object()

Start = tuple[int, int]  # (start ts, start seq): tuples compare by ts, then seq
Idx = tuple[str | None, str | None, str | None]


class Fire(NamedTuple):
    """A trigger that fired: task, the event that completed it, and where the match began."""

    task_id: str
    seq: int
    start_seq: int
    start_ts: int
    key: Any


# Builds a Fire without the Python-level NamedTuple __new__ (a measurable share per fire).
_fire = tuple.__new__


_KEYABLE = frozenset({str, int, float, bool, type(None)})


def key_of(key: str, ev: Event) -> Any:
    """The correlation key of an event under a trigger's key spec, or MISSING."""
    if key == "visit":
        return MISSING if ev.visit is None else ev.visit
    if key == "none":
        return 0
    v = ev.args.get(key[4:], MISSING)
    # Lists and dicts cannot key a dict; such an event simply cannot take part.
    if v is not MISSING and v.__class__ not in _KEYABLE:
        return MISSING
    return v


class _Reg:
    __slots__ = ("node", "since_seq", "task_id", "trigger", "within")

    def __init__(self, task_id: str, trigger: Trigger, node: _Node, since_seq: int) -> None:
        self.task_id = task_id
        self.trigger = trigger
        self.node = node
        self.since_seq = since_seq
        self.within = INF if trigger.within_ms is None else trigger.within_ms


class _Node:
    __slots__ = ("children", "ends", "label", "max_within", "out", "parent", "pattern", "terminals")

    def __init__(self, parent: _Node | None, pattern: Pattern | None) -> None:
        self.parent = parent
        self.pattern = pattern
        self.label = pattern.label if pattern is not None else None
        self.children: dict[Any, _Node] = {}
        # Outgoing edges filed under each index key they accept, as (child, predicate test
        # or None): the hot loop then needs no attribute lookups on the pattern.
        self.out: dict[Idx, list[tuple[_Node, Callable[[dict[str, Any]], bool] | None]]] = {}
        self.terminals: dict[str, _Reg] = {}
        # (task id, since seq, within) of each terminal, flattened for the hot loop.
        self.ends: tuple[tuple[str, int, float], ...] = ()
        # The longest within_ms of any trigger at or below this node: past it, a partial
        # match here can never complete, so it expires.
        self.max_within: float = INF


class _KeyState:
    __slots__ = ("partials", "waiting")

    def __init__(self) -> None:
        self.partials: dict[_Node, Start] = {}
        # index key -> nodes holding a partial with an edge under that key (an ordered set)
        self.waiting: dict[Idx, dict[_Node, None]] = {}


class _Mode:
    __slots__ = (
        "arg",
        "guard",
        "inner_idx",
        "is_visit",
        "key",
        "key_kind",
        "keys",
        "label",
        "root",
        "strict",
    )

    def __init__(self, label: tuple[Any, ...], trigger: Trigger) -> None:
        self.label = label
        self.strict = trigger.strict
        self.key = trigger.key
        self.is_visit = trigger.key == "visit"
        self.key_kind = 0 if trigger.key == "visit" else 1 if trigger.key == "none" else 2
        self.arg = trigger.key[4:] if self.key_kind == 2 else ""
        self.inner_idx: set[Idx] = set()
        self.guard = trigger.guard
        self.root = _Node(None, None)
        self.keys: dict[Any, _KeyState] = {}


# One mode to visit for an event signature: the root edges it can start, the index keys
# under which partials may wait for it, and the guard to test (its kind/page/event fit).
_Test = Callable[[dict[str, Any]], bool] | None
_Step = tuple[_Mode, tuple[tuple[_Node, _Test], ...], tuple[Idx, ...], Pattern | None]


class Matcher:
    """All registered triggers in one trie; `process(event)` returns the triggers it fires."""

    def __init__(self, max_keys_per_mode: int = 10_000, max_partials_per_key: int = 4_096) -> None:
        self.max_keys_per_mode = max_keys_per_mode
        self.max_partials_per_key = max_partials_per_key
        self._modes: dict[tuple[Any, ...], _Mode] = {}
        self._regs: dict[str, _Reg] = {}
        self._heap: list[tuple[float, int, _KeyState, Any, _Node, _Mode]] = []
        self._tick = 0
        self._dirty = True
        self._shapes: tuple[int, ...] = ()
        self._plans: dict[tuple[str, str, str], tuple[_Step, ...]] = {}
        self._visit_modes: tuple[_Mode, ...] = ()
        self.evicted = 0
        self.expired = 0

    # -- registration -------------------------------------------------------------------

    def add(self, task_id: str, trigger: Trigger, since_seq: int = 0) -> None:
        """Register (or replace) a task's trigger; it sees events with seq >= since_seq."""
        if task_id in self._regs:
            self.remove(task_id)
        mode = self._modes.get(trigger.mode)
        if mode is None:
            mode = self._modes[trigger.mode] = _Mode(trigger.mode, trigger)
        node = mode.root
        for pat in trigger.steps:
            child = node.children.get(pat.label)
            if child is None:
                child = _Node(node, pat)
                node.children[pat.label] = child
                new_idx = [c for c in pat.index_keys() if c not in node.out]
                test = pat.test
                for c in pat.index_keys():
                    node.out.setdefault(c, []).append((child, test))
                # Partials already waiting at this node must also be found under new keys.
                if new_idx and node is not mode.root:
                    for ks in mode.keys.values():
                        if node in ks.partials:
                            for c in new_idx:
                                ks.waiting.setdefault(c, {})[node] = None
            node = child
        reg = _Reg(task_id, trigger, node, since_seq)
        node.terminals[task_id] = reg
        node.ends = tuple((r.task_id, r.since_seq, r.within) for r in node.terminals.values())
        self._regs[task_id] = reg
        self._fix_within(node)
        self._dirty = True

    def remove(self, task_id: str) -> bool:
        """Unregister a task's trigger; False if it was not registered."""
        reg = self._regs.pop(task_id, None)
        if reg is None:
            return False
        node = reg.node
        del node.terminals[task_id]
        node.ends = tuple((r.task_id, r.since_seq, r.within) for r in node.terminals.values())
        mode = self._modes[reg.trigger.mode]
        while node.parent is not None and not node.terminals and not node.children:
            parent = node.parent
            del parent.children[node.label]
            gone = []
            for c in node.pattern.index_keys():  # type: ignore[union-attr]
                edges = [e for e in parent.out[c] if e[0] is not node]
                if edges:
                    parent.out[c] = edges
                else:
                    del parent.out[c]
                    gone.append(c)
            if gone and parent.parent is not None:
                for key, ks in list(mode.keys.items()):
                    if parent in ks.partials:
                        if parent.out:
                            for c in gone:
                                w = ks.waiting.get(c)
                                if w is not None:
                                    w.pop(parent, None)
                                    if not w:
                                        del ks.waiting[c]
                        else:
                            self._drop(mode, key, ks, parent)
            node = parent
        self._fix_within(node)
        if not mode.root.children:
            del self._modes[mode.label]
        self._dirty = True
        return True

    def tasks(self) -> list[str]:
        """The task ids with a registered trigger."""
        return list(self._regs)

    def trigger(self, task_id: str) -> Trigger | None:
        """The compiled trigger registered for a task."""
        reg = self._regs.get(task_id)
        return reg.trigger if reg else None

    def since_seq(self, task_id: str) -> int:
        """The first event seq a task's trigger considers."""
        return self._regs[task_id].since_seq

    def _fix_within(self, node: _Node | None) -> None:
        while node is not None:
            m = 0.0
            for reg in node.terminals.values():
                m = max(m, reg.within)
            for child in node.children.values():
                m = max(m, child.max_within)
            node.max_within = m
            node = node.parent

    def _rebuild(self) -> None:
        # Which of kind/page/event each edge names (its "shape"), and per mode which index
        # keys its inner edges use; per-event plans are derived from these and cached.
        shapes: set[int] = set()

        def shape(c: Idx) -> int:
            return (c[0] is not None) | (c[1] is not None) << 1 | (c[2] is not None) << 2

        for mode in self._modes.values():
            inner: set[Idx] = set()
            stack = list(mode.root.children.values())
            while stack:
                n = stack.pop()
                inner.update(n.out)
                stack.extend(n.children.values())
            mode.inner_idx = inner
            shapes.update(shape(c) for c in inner)
            shapes.update(shape(c) for c in mode.root.out)
            if mode.guard is not None:
                shapes.update(shape(c) for c in mode.guard.index_keys())
        self._shapes = tuple(sorted(shapes))
        self._visit_modes = tuple(m for m in self._modes.values() if m.is_visit)
        self._plans.clear()
        self._dirty = False

    def _plan(self, sig: tuple[str, str, str]) -> tuple[_Step, ...]:
        """For events with this (kind, page, event): the modes to visit and what to look up."""
        kind, page, name = sig
        combos = [
            (kind if s & 1 else None, page if s & 2 else None, name if s & 4 else None)
            for s in self._shapes
        ]
        plan = []
        for mode in self._modes.values():
            starts = tuple(e for c in combos for e in mode.root.out.get(c, ()))
            inner = tuple(c for c in combos if c in mode.inner_idx)
            guard = mode.guard
            guard_hit = guard is not None and guard.shape_matches(kind, page, name)
            if starts or inner or guard_hit or mode.strict:
                plan.append((mode, starts, inner, guard if guard_hit else None))
        if len(self._plans) >= 65_536:
            self._plans.clear()  # a bounded cache: page ids are an open vocabulary
        result = self._plans[sig] = tuple(plan)
        return result

    # -- matching -----------------------------------------------------------------------

    def process(self, ev: Event) -> list[Fire]:
        """Advance all partial matches by one stamped event; returns the fires, by task id."""
        # This is the hot path (every app event, every trigger), so it is one function with
        # its helpers inlined: a Python call costs about as much as the work of a mode.
        if self._dirty:
            self._rebuild()
        fires: list[Fire] = []
        ts = ev.ts
        heap = self._heap
        if heap and heap[0][0] < ts:
            self._expire(ts)
        sig = (ev.kind, ev.page, ev.event)
        plan = self._plans.get(sig)
        if plan is None:
            plan = self._plan(sig)
        args = ev.args
        seq = ev.seq
        for mode, starts, inner, guard in plan:
            keys = mode.keys
            # A mode without any partial match can only be started, not advanced or broken.
            if not starts and not keys:
                continue
            kk = mode.key_kind
            if kk == 0:
                key = ev.visit
                if key is None:
                    continue
            elif kk == 1:
                key = 0
            else:
                key = args.get(mode.arg, MISSING)
                if key is MISSING or (key.__class__ not in _KEYABLE):
                    continue
            ks = keys.get(key)
            if ks is None and not starts:
                continue
            new: dict[_Node, Start] = {}
            if ks is not None and inner:
                partials = ks.partials
                waiting = ks.waiting
                for c in inner:
                    nodes = waiting.get(c)
                    if nodes is None:
                        continue
                    for node in nodes:
                        st = partials[node]
                        age = ts - st[0]
                        for child, test in node.out[c]:
                            if age > child.max_within or (test is not None and not test(args)):
                                continue
                            cur = new.get(child)
                            if cur is None or cur < st:
                                new[child] = st
            if starts:
                me = (ts, seq)
                for child, test in starts:
                    if test is None or test(args):
                        new[child] = me
            if ks is not None and (
                mode.strict or (guard is not None and (not guard.where or guard.check_args(args)))
            ):
                # Every partial this event did not advance now has a same-key event (or a
                # guard hit) inside its span: it is dead. (`new` was read from it already.)
                del keys[key]
                ks = None
            if not new:
                continue
            if ks is not None:
                partials = ks.partials
                waiting = ks.waiting
            for child, st in new.items():
                ends = child.ends
                if ends:
                    for task_id, since, within in ends:
                        if st[1] >= since and ts - st[0] <= within:
                            fires.append(_fire(Fire, (task_id, seq, st[1], st[0], key)))
                out = child.out
                if not out:
                    continue  # a leaf: nothing can extend it
                if ks is None:
                    # Created only now: a key whose matches all ended at leaves needs none.
                    ks = _KeyState()
                    keys[key] = ks
                    if len(keys) > self.max_keys_per_mode:
                        # Oldest-inserted key first: for visits that is the oldest visit.
                        del keys[next(iter(keys))]
                        self.evicted += 1
                    partials = ks.partials
                    waiting = ks.waiting
                cur = partials.get(child)
                if cur is None:
                    partials[child] = st
                    for c in out:
                        w = waiting.get(c)
                        if w is None:
                            waiting[c] = {child: None}
                        else:
                            w[child] = None
                    # One timer per partial, armed when it is created; a later start only
                    # moves the deadline, which the timer re-checks when it goes off.
                    mw = child.max_within
                    if mw != INF:
                        self._tick += 1
                        heapq.heappush(heap, (st[0] + mw, self._tick, ks, key, child, mode))
                elif cur < st:
                    partials[child] = st
            if ks is not None and len(partials) > self.max_partials_per_key:
                while len(partials) > self.max_partials_per_key:
                    oldest = min(partials, key=partials.__getitem__)
                    self._drop(mode, key, ks, oldest)
                    self.evicted += 1
        if ev.kind == "page_exit" and ev.visit is not None:
            # No later event belongs to this visit: its partial matches can never advance.
            for mode in self._visit_modes:
                mode.keys.pop(ev.visit, None)
        if len(fires) > 1:
            fires.sort()
        return fires

    def _drop(self, mode: _Mode, key: Any, ks: _KeyState, node: _Node) -> None:
        del ks.partials[node]
        for c in list(ks.waiting):
            w = ks.waiting[c]
            if node in w:
                del w[node]
                if not w:
                    del ks.waiting[c]
        if not ks.partials and mode.keys.get(key) is ks:
            del mode.keys[key]

    def _expire(self, now: int) -> None:
        heap = self._heap
        while heap and heap[0][0] < now:
            _, _, ks, key, node, mode = heapq.heappop(heap)
            if mode.keys.get(key) is not ks:
                continue  # the key's state was dropped (visit end, strict break, eviction)
            st = ks.partials.get(node)
            if st is None:
                continue
            if now - st[0] > node.max_within:
                if len(ks.partials) == 1:
                    del mode.keys[key]  # the common case: the key's only partial; skip the index
                else:
                    self._drop(mode, key, ks, node)
                self.expired += 1
            elif node.max_within != INF:
                # A later start (or a wider trigger registered since) moved the deadline.
                self._tick += 1
                heapq.heappush(heap, (st[0] + node.max_within, self._tick, ks, key, node, mode))

    # -- introspection ------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """Sizes and counters, for monitoring and tests of the caps."""
        nodes = 0
        for mode in self._modes.values():
            stack = [mode.root]
            while stack:
                n = stack.pop()
                nodes += 1
                stack.extend(n.children.values())
        return {
            "triggers": len(self._regs),
            "modes": len(self._modes),
            "nodes": nodes,
            "keys": sum(len(m.keys) for m in self._modes.values()),
            "partials": sum(
                len(ks.partials) for m in self._modes.values() for ks in m.keys.values()
            ),
            "timers": len(self._heap),
            "evicted": self.evicted,
            "expired": self.expired,
        }

    def reset_state(self) -> None:
        """Forget every partial match (keep the triggers), e.g. before a replay."""
        for mode in self._modes.values():
            mode.keys.clear()
        self._heap.clear()
