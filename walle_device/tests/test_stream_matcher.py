"""The shared-trie matcher against a brute-force oracle, plus its caps and run-time changes."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from walle_device.stream.events import Event, sequence
from walle_device.stream.matcher import MISSING, Matcher, key_of
from walle_device.stream.naive import NaiveMatcher
from walle_device.stream.spec import Trigger, compile_trigger

# -- the oracle: enumerate subsequences, nothing clever -----------------------------------


def match_ends_at(t: Trigger, evs: list[Event], i: int, since: int) -> bool:
    """True when some subsequence ending exactly at evs[i] satisfies the trigger."""
    last = evs[i]
    key = key_of(t.key, last)
    if key is MISSING or not t.steps[-1].matches(last.kind, last.page, last.event, last.args):
        return False

    def same_key(e: Event) -> bool:
        k = key_of(t.key, e)
        return k is not MISSING and k == key

    def valid(chosen: list[int]) -> bool:
        first = evs[chosen[0]]
        if first.seq < since:
            return False
        if t.within_ms is not None and last.ts - first.ts > t.within_ms:
            return False
        picked = set(chosen)
        for j in range(chosen[0] + 1, i):
            if j in picked or not same_key(evs[j]):
                continue
            e = evs[j]
            if t.strict:
                return False
            if t.guard is not None and t.guard.matches(e.kind, e.page, e.event, e.args):
                return False
        return True

    def search(step: int, hi: int, chosen: list[int]) -> bool:
        if step < 0:
            return valid(chosen)
        pat = t.steps[step]
        for j in range(hi - 1, -1, -1):
            e = evs[j]
            if same_key(e) and pat.matches(e.kind, e.page, e.event, e.args):
                if search(step - 1, j, [j, *chosen]):
                    return True
        return False

    return search(len(t.steps) - 2, i, [i])


# -- strategies ---------------------------------------------------------------------------

KINDS = ["page_enter", "page_exit", "click", "exposure"]
ids = st.sampled_from([None, None, "*", "a", "b", ["a", "b"]])
preds = st.sampled_from(
    [
        {"arg": "v", "op": "gt", "value": 1},
        {"arg": "v", "op": "le", "value": 1},
        {"arg": "v", "op": "eq", "value": 2},
        {"arg": "v", "op": "in", "value": [0, 3]},
        {"arg": "u", "op": "exists"},
        {"arg": "u", "op": "exists", "value": False},
        {"arg": "u", "op": "prefix", "value": "p"},
        {"arg": "u", "op": "ne", "value": "q"},
    ]
)


@st.composite
def patterns(draw: Any) -> dict[str, Any]:
    p: dict[str, Any] = {}
    kind = draw(st.sampled_from([None, None, *KINDS, ["click", "exposure"]]))
    if kind is not None:
        p["kind"] = kind
    page = draw(ids)
    if page is not None:
        p["page"] = page
    ev = draw(st.sampled_from([None, None, None, "x", "y"]))
    if ev is not None:
        p["event"] = ev
    where = draw(st.lists(preds, max_size=2)) if draw(st.integers(0, 3)) == 0 else []
    if where:
        p["where"] = where
    return p


@st.composite
def triggers(draw: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"steps": draw(st.lists(patterns(), min_size=1, max_size=4))}
    spec["contiguity"] = draw(st.sampled_from(["relaxed", "relaxed", "strict"]))
    within = draw(st.sampled_from([None, None, 5, 20]))
    if within is not None:
        spec["within_ms"] = within
    spec["key"] = draw(st.sampled_from(["none", "visit", "arg:u", "arg:v"]))
    if draw(st.booleans()) and draw(st.booleans()):
        spec["not_between"] = draw(patterns())
    return spec


@st.composite
def raw_events(draw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {}
    if draw(st.booleans()):
        args["v"] = draw(st.integers(0, 3))
    # ["p1"] cannot key a match (unhashable): such events must simply not take part.
    u = draw(st.sampled_from([None, "p1", "p2", "q", ["p1"]]))
    if u is not None:
        args["u"] = u
    return {
        "kind": draw(st.sampled_from(KINDS)),
        "page": draw(st.sampled_from(["a", "b"])),
        "event": draw(st.sampled_from(["", "x", "y"])),
        "args": args,
        "gap": draw(st.sampled_from([0, 1, 2, 4, 8])),
    }


def stamp(raws: list[dict[str, Any]]) -> list[Event]:
    ts, out = 0, []
    for r in raws:
        ts += r["gap"]
        out.append({**r, "ts": ts})
    return sequence(out)


# -- properties ---------------------------------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(triggers(), min_size=1, max_size=6), st.lists(raw_events(), min_size=8, max_size=28)
)
def test_trie_fires_exactly_when_a_matching_subsequence_exists(
    specs: list[dict[str, Any]], raws: list[dict[str, Any]]
) -> None:
    trigs = {f"t{i}": compile_trigger(s) for i, s in enumerate(specs)}
    evs = stamp(raws)
    trie, naive = Matcher(), NaiveMatcher()
    for tid, t in trigs.items():
        trie.add(tid, t)
        naive.add(tid, t)
    for i, ev in enumerate(evs):
        want = sorted(tid for tid, t in trigs.items() if match_ends_at(t, evs, i, 0))
        assert [f.task_id for f in trie.process(ev)] == want, (i, ev)
        assert [f.task_id for f in naive.process(ev)] == want, (i, ev)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(triggers(), min_size=2, max_size=5),
    st.lists(raw_events(), min_size=8, max_size=30),
    st.lists(st.tuples(st.integers(0, 30), st.integers(0, 4), st.booleans()), max_size=8),
)
def test_adding_and_removing_triggers_mid_stream_matches_the_oracle(
    specs: list[dict[str, Any]],
    raws: list[dict[str, Any]],
    changes: list[tuple[int, int, bool]],
) -> None:
    trigs = {f"t{i}": compile_trigger(s) for i, s in enumerate(specs)}
    evs = stamp(raws)
    trie = Matcher()
    active: dict[str, int] = {}  # task -> since seq
    for tid in list(trigs)[::2]:
        trie.add(tid, trigs[tid])
        active[tid] = 0
    for i, ev in enumerate(evs):
        for at, which, add in changes:
            if at == i:
                tid = f"t{which % len(trigs)}"
                if add:
                    trie.add(tid, trigs[tid], since_seq=ev.seq)
                    active[tid] = ev.seq
                else:
                    trie.remove(tid)
                    active.pop(tid, None)
        want = sorted(
            tid for tid, since in active.items() if match_ends_at(trigs[tid], evs, i, since)
        )
        assert [f.task_id for f in trie.process(ev)] == want, (i, ev)


# -- behaviour in words -------------------------------------------------------------------


def feed(m: Matcher, raws: list[dict[str, Any]]) -> list[list[str]]:
    return [[f.task_id for f in m.process(e)] for e in sequence(raws)]


def test_it_shares_one_node_for_equal_prefixes() -> None:
    m = Matcher()
    a = {"steps": [{"kind": "page_enter", "page": "item"}, {"kind": "click"}], "key": "visit"}
    b = {"steps": [{"kind": "page_enter", "page": "item"}, {"kind": "exposure"}], "key": "visit"}
    m.add("a", compile_trigger(a))
    m.add("b", compile_trigger(b))
    assert m.stats()["nodes"] == 4  # root, the shared page_enter, click, exposure


def test_it_keeps_one_partial_per_node_and_key_with_the_latest_start() -> None:
    m = Matcher()
    spec = {"steps": [{"kind": "click"}, {"kind": "page_exit"}], "within_ms": 100}
    m.add("t", compile_trigger(spec))
    evs = sequence([{"kind": "click", "page": "p", "ts": t} for t in range(0, 1000, 10)])
    for e in evs:
        m.process(e)
    assert m.stats()["partials"] == 1
    fires = m.process(
        sequence([*[e.to_dict() for e in evs], {"kind": "page_exit", "page": "p", "ts": 1000}])[-1]
    )
    assert fires[0].start_ts == 990


def test_timers_expire_partials_past_the_longest_within() -> None:
    m = Matcher()
    m.add("t", compile_trigger({"steps": [{"kind": "click"}, {"kind": "scroll"}], "within_ms": 50}))
    feed(m, [{"kind": "click", "page": "p", "ts": 0}, {"kind": "exposure", "page": "p", "ts": 100}])
    assert m.stats()["partials"] == 0
    assert m.expired == 1


def test_keys_per_mode_are_capped() -> None:
    m = Matcher(max_keys_per_mode=10)
    m.add(
        "t", compile_trigger({"steps": [{"kind": "click"}, {"kind": "scroll"}], "key": "arg:user"})
    )
    feed(m, [{"kind": "click", "page": "p", "args": {"user": i}} for i in range(50)])
    assert m.stats()["keys"] == 10
    assert m.evicted == 40


def test_removing_the_last_trigger_frees_the_trie() -> None:
    m = Matcher()
    m.add("t", compile_trigger({"steps": [{"kind": "click"}, {"kind": "scroll"}]}))
    feed(m, [{"kind": "click", "page": "p"}])
    assert m.remove("t")
    assert m.stats() == {**m.stats(), "triggers": 0, "modes": 0, "nodes": 0, "partials": 0}
    assert not m.remove("t")


def test_strict_contiguity_breaks_on_any_same_key_event() -> None:
    m = Matcher()
    m.add(
        "t",
        compile_trigger({"steps": [{"kind": "click"}, {"kind": "scroll"}], "contiguity": "strict"}),
    )
    got = feed(
        m,
        [
            {"kind": "click", "page": "p"},
            {"kind": "exposure", "page": "p"},
            {"kind": "scroll", "page": "p"},
            {"kind": "click", "page": "p"},
            {"kind": "scroll", "page": "p"},
        ],
    )
    assert got == [[], [], [], [], ["t"]]


def test_not_between_guard_cancels_a_partial_match() -> None:
    m = Matcher()
    spec = {
        "steps": [{"kind": "page_enter"}, {"kind": "page_exit"}],
        "not_between": {"kind": "click"},
        "key": "visit",
    }
    m.add("bounce", compile_trigger(spec))
    got = feed(
        m,
        [
            {"kind": "page_enter", "page": "a"},
            {"kind": "click", "page": "a"},
            {"kind": "page_exit", "page": "a"},
            {"kind": "page_enter", "page": "b"},
            {"kind": "scroll", "page": "b"},
            {"kind": "page_exit", "page": "b"},
        ],
    )
    assert got == [[], [], [], [], [], ["bounce"]]


def test_fires_do_not_depend_on_registration_order() -> None:
    from walle_device.stream.workload import generate_events, generate_triggers

    evs = generate_events(4, 3000)
    specs = [compile_trigger(s) for s in generate_triggers(4, 60)]
    runs = []
    for order in (specs, specs[::-1]):
        m = Matcher()
        for t in order:
            m.add(f"t{specs.index(t)}", t)
        runs.append([m.process(e) for e in sequence([dict(e) for e in evs])])
    assert runs[0] == runs[1]
    assert sum(map(len, runs[0])) > 100


def test_partials_per_key_are_capped() -> None:
    m = Matcher(max_partials_per_key=3)
    for i in range(6):
        spec = {"steps": [{"kind": "click", "event": f"e{i}"}, {"kind": "scroll"}]}
        m.add(f"t{i}", compile_trigger(spec))
    feed(m, [{"kind": "click", "page": "p", "event": f"e{i}"} for i in range(6)])
    assert m.stats()["partials"] == 3
    assert m.evicted == 3
    # The oldest starts went; the latest ones still complete.
    scroll = Event("scroll", "p", ts=0, seq=6)
    assert [f.task_id for f in m.process(scroll)] == ["t3", "t4", "t5"]
