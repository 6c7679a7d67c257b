"""Window views over the log, aggregates, and keyed state with TTL and byte caps."""

from __future__ import annotations

from typing import Any

import pytest

from walle_device.stream.events import Event, sequence
from walle_device.stream.windows import KeyedState, Ring, StateError, aggregate, window_events


def make_ring(raws: list[dict[str, Any]], cap: int = 100) -> tuple[Ring, list[Event]]:
    ring = Ring(cap)
    evs = sequence(raws)
    for e in evs:
        ring.append(e)
    return ring, evs


def seqs(evs: list[Event]) -> list[int]:
    return [e.seq for e in evs]


VISITS = [
    {"kind": "page_enter", "page": "home", "ts": 0},
    {"kind": "exposure", "page": "home", "ts": 100, "args": {"item": "a"}},
    {"kind": "page_exit", "page": "home", "ts": 200},
    {"kind": "page_enter", "page": "item", "ts": 1000},  # seq 3
    {"kind": "exposure", "page": "item", "ts": 1100, "args": {"item": "b"}},
    {"kind": "click", "page": "item", "ts": 1500, "args": {"item": "b", "price": 20}},
    {"kind": "exposure", "page": "item", "ts": 2100, "args": {"item": "c"}},
    {"kind": "click", "page": "item", "ts": 2600, "args": {"item": "c", "price": 5}},  # seq 7
]


def test_session_is_the_current_page_visit() -> None:
    ring, evs = make_ring(VISITS)
    assert seqs(window_events(ring, {"type": "session"}, evs[7], start_seq=5)) == [3, 4, 5, 6, 7]


def test_since_start_begins_at_the_first_matched_event() -> None:
    ring, evs = make_ring(VISITS)
    assert seqs(window_events(ring, {"type": "since_start"}, evs[7], start_seq=5)) == [5, 6, 7]


def test_last_n_and_last_ms() -> None:
    ring, evs = make_ring(VISITS)
    assert seqs(window_events(ring, {"type": "last_n", "n": 3}, evs[7], 0)) == [5, 6, 7]
    assert seqs(window_events(ring, {"type": "last_n", "n": 50}, evs[7], 0)) == list(range(8))
    assert seqs(window_events(ring, {"type": "last_ms", "ms": 1100}, evs[7], 0)) == [5, 6, 7]


def test_tumbling_is_the_aligned_bucket_holding_the_fire() -> None:
    ring, evs = make_ring(VISITS)
    assert seqs(window_events(ring, {"type": "tumbling", "size_ms": 1000}, evs[7], 0)) == [6, 7]
    assert seqs(window_events(ring, {"type": "tumbling", "size_ms": 1000}, evs[5], 0)) == [3, 4, 5]


def test_hopping_is_the_oldest_aligned_window_still_holding_the_fire() -> None:
    ring, evs = make_ring(VISITS)
    # size 2000, hop 500, fire at 2600: windows start at 1000, 1500, 2000, 2500; oldest is 1000.
    got = window_events(ring, {"type": "hopping", "size_ms": 2000, "hop_ms": 500}, evs[7], 0)
    assert seqs(got) == [3, 4, 5, 6, 7]
    got = window_events(ring, {"type": "hopping", "size_ms": 1000, "hop_ms": 500}, evs[7], 0)
    assert seqs(got) == [6, 7]


def test_windows_are_clipped_to_what_the_ring_still_holds() -> None:
    ring, evs = make_ring(VISITS, cap=4)
    assert seqs(window_events(ring, {"type": "since_start"}, evs[7], start_seq=0)) == [4, 5, 6, 7]
    assert ring.get(2) is None and ring.get(7) is evs[7]


def test_aggregates() -> None:
    _, evs = make_ring(VISITS)
    aggs = [
        {"name": "n", "op": "count"},
        {"name": "with_item", "op": "count", "arg": "item"},
        {"name": "spent", "op": "sum", "arg": "price"},
        {"name": "cheapest", "op": "min", "arg": "price"},
        {"name": "dearest", "op": "max", "arg": "price"},
        {"name": "none", "op": "max", "arg": "missing"},
        {"name": "items", "op": "distinct", "arg": "item"},
        {"name": "recent", "op": "last_k", "arg": "item", "k": 2},
        {"name": "top", "op": "top_k", "arg": "item", "k": 2},
    ]
    assert aggregate(evs, aggs) == {
        "n": 8,
        "with_item": 5,
        "spent": 25,
        "cheapest": 5,
        "dearest": 20,
        "none": None,
        "items": 3,
        "recent": ["c", "c"],
        "top": [["b", 2], ["c", 2]],
    }


def test_keyed_state_expires_entries_after_the_ttl() -> None:
    st = KeyedState(ttl_ms=1000)
    st.put("views", 3, now=0)
    assert st.get("views", now=1000) == 3
    assert st.get("views", now=1001) is None
    assert st.expired == 1


def test_keyed_state_caps_a_value_and_evicts_the_oldest_keys_past_the_total() -> None:
    st = KeyedState(ttl_ms=None, max_value_bytes=50, max_bytes=100)
    with pytest.raises(StateError, match="per-key cap is 50"):
        st.put("big", "x" * 60, now=0)
    for i in range(10):
        st.put(f"k{i}", "x" * 20, now=i)
    assert st.bytes <= 100
    assert st.keys(now=10) == ["k6", "k7", "k8", "k9"]
    assert st.evicted == 6


def test_keyed_state_counters_and_copies() -> None:
    st = KeyedState()
    assert st.incr("n", now=0) == 1
    assert st.incr("n", 2, now=1) == 3
    value = {"a": [1]}
    st.put("v", value, now=0)
    value["a"].append(2)  # the store holds its own copy
    assert st.get("v", now=0) == {"a": [1]}
    with pytest.raises(StateError, match="JSON"):
        st.put("bad", {1, 2})
    assert st.delete("v") and not st.delete("v")


def test_keyed_state_survives_a_snapshot_and_restore() -> None:
    st = KeyedState(ttl_ms=1000)
    st.put("a", {"n": 1}, now=0)
    st.put("b", [1, 2], now=500)
    again = KeyedState(ttl_ms=1000)
    again.restore(st.snapshot())
    assert again.get("a", now=900) == {"n": 1}
    assert again.get("a", now=1200) is None and again.get("b", now=1200) == [1, 2]
    assert again.bytes == st.bytes - len("a") - len('{"n":1}')
