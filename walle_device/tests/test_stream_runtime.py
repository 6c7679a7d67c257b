"""The stream processor end to end: emit, fire with a window, persistence, replay, explain."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from walle_device.stream import Stream, TriggerError, Window
from walle_device.stream.events import Event
from walle_device.stream.store import EventStore

ITEMS_PER_VISIT = {
    "steps": [{"kind": "page_enter", "page": "item"}, {"kind": "page_exit", "page": "item"}],
    "key": "visit",
    "window": {"type": "session"},
    "aggregates": [
        {"name": "exposures", "op": "count", "arg": "item"},
        {"name": "items", "op": "distinct", "arg": "item"},
    ],
}
BIG_CLICK = {
    "steps": [
        {"kind": "page_enter"},
        {"kind": "click", "where": [{"arg": "price", "op": "gt", "value": 100}]},
    ],
    "key": "visit",
}


class Fires:
    """An on_fire callback that records what it was given."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, Window]] = []

    def __call__(self, task_id: str, fire_seq: int, window: Window) -> None:
        self.calls.append((task_id, fire_seq, window))

    def tasks(self) -> list[str]:
        return [c[0] for c in self.calls]


def visit(s: Stream, page: str, items: list[str], t0: int, price: float | None = None) -> None:
    s.emit("page_enter", page, ts=t0)
    for i, item in enumerate(items):
        s.emit("exposure", page, "impression", {"item": item}, ts=t0 + 10 * (i + 1))
    if price is not None:
        s.emit("click", page, "buy", {"price": price}, ts=t0 + 500)
    s.emit("page_exit", page, ts=t0 + 1000)


def test_emit_never_blocks_and_counts_what_a_full_queue_drops() -> None:
    s = Stream(queue_size=5)
    results = [s.emit("click", "p") for _ in range(8)]
    assert results == [True] * 5 + [False] * 3
    assert s.stats()["dropped"] == 3 and s.stats()["queued"] == 5


def test_a_fired_trigger_gets_its_window_and_aggregates() -> None:
    fires = Fires()
    s = Stream(fires)
    s.register_trigger("ipv", ITEMS_PER_VISIT)
    visit(s, "home", ["a"], 0)
    visit(s, "item", ["a", "b", "a"], 2000)
    s.process_pending()
    assert fires.tasks() == ["ipv"]
    _task, fire_seq, window = fires.calls[0]
    assert fire_seq == 7  # the seq of the page_exit that completed the match
    assert [e.kind for e in window] == [
        "page_enter",
        "exposure",
        "exposure",
        "exposure",
        "page_exit",
    ]
    assert window.aggregates == {"exposures": 3, "items": 2}
    assert window.to_dict()["events"][0]["page"] == "item"


def test_registering_the_same_trigger_again_keeps_a_visit_in_progress() -> None:
    """A device re-registers its active tasks' triggers when the server re-delivers them (a
    reconnect): that must not forget a visit that has begun; a changed trigger starts over."""
    fires = Fires()
    s = Stream(fires)
    s.register_trigger("ipv", ITEMS_PER_VISIT)
    s.emit("page_enter", "item", ts=0)
    s.emit("exposure", "item", "impression", {"item": "a"}, ts=10)
    s.process_pending()
    s.register_trigger("ipv", dict(ITEMS_PER_VISIT))  # the same trigger, delivered again
    s.emit("page_exit", "item", ts=1000)
    s.process_pending()
    assert fires.tasks() == ["ipv"]
    assert fires.calls[0][2].aggregates == {"exposures": 1, "items": 1}

    changed = {**ITEMS_PER_VISIT, "aggregates": ITEMS_PER_VISIT["aggregates"][:1]}
    s.emit("page_enter", "item", ts=2000)
    s.process_pending()
    s.register_trigger("ipv", changed)  # a new trigger sees events from now on
    s.emit("page_exit", "item", ts=3000)
    s.process_pending()
    assert fires.tasks() == ["ipv"]


def test_events_flow_from_app_threads_through_the_worker() -> None:
    fires = Fires()
    s = Stream(fires)
    s.register_trigger("ipv", ITEMS_PER_VISIT)
    s.start()
    try:
        threads = [threading.Thread(target=visit, args=(s, "home", ["x"] * 5, 0)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        visit(s, "item", ["a"], 10_000)
        assert s.flush()
    finally:
        s.stop()
    assert fires.tasks() == ["ipv"]
    assert s.stats()["processed"] == 4 * 7 + 3


def test_malformed_events_are_rejected_and_counted_without_stopping_the_stream() -> None:
    fires = Fires()
    s = Stream(fires)
    s.register_trigger("ipv", ITEMS_PER_VISIT)
    s.emit("tap", "item")
    s.emit("click", "item", args={"blob": "x" * 5000})
    s.emit("click", "item", args={"bad": object()})
    s.emit("click", "item", ts="yesterday")  # type: ignore[arg-type]
    s.emit("click", "item", ts=float("nan"))  # type: ignore[arg-type]
    s.emit("click", "item", args=["not", "a", "dict"])  # type: ignore[arg-type]
    visit(s, "item", [], 0)
    s.process_pending()
    assert s.stats()["rejected"] == 6
    assert fires.tasks() == ["ipv"]


def test_a_failing_callback_is_counted_and_other_tasks_still_fire() -> None:
    got: list[str] = []

    def on_fire(task_id: str, seq: int, window: Window) -> None:
        if task_id == "bad":
            raise RuntimeError("task bug")
        got.append(task_id)

    s = Stream(on_fire)
    s.register_trigger("bad", ITEMS_PER_VISIT)
    s.register_trigger("good", ITEMS_PER_VISIT)
    visit(s, "item", [], 0)
    s.process_pending()
    assert got == ["good"] and s.stats()["callback_errors"] == 1


def test_triggers_come_and_go_at_run_time() -> None:
    fires = Fires()
    s = Stream(fires)
    visit(s, "item", [], 0)
    s.process_pending()
    s.register_trigger("ipv", ITEMS_PER_VISIT)
    assert fires.tasks() == []  # a trigger sees only events after its registration
    visit(s, "item", [], 2000)
    s.process_pending()
    assert s.remove_trigger("ipv")
    visit(s, "item", [], 4000)
    s.process_pending()
    assert fires.tasks() == ["ipv"]
    assert not s.remove_trigger("ipv")


def test_an_invalid_trigger_is_refused_with_its_errors() -> None:
    with pytest.raises(TriggerError, match="unknown kind 'tap'"):
        Stream().register_trigger("t", {"steps": [{"kind": "tap"}]})


def test_a_restart_rebuilds_partial_matches_from_the_log(tmp_path: Path) -> None:
    fires = Fires()
    s = Stream(fires, state_dir=tmp_path)
    s.register_trigger("big", BIG_CLICK)
    s.register_trigger("ipv", ITEMS_PER_VISIT)
    visit(s, "item", ["a"], 0)  # fires ipv before the restart
    s.emit("page_enter", "item", ts=5000)
    s.emit("exposure", "item", "impression", {"item": "z"}, ts=5100)
    s.process_pending()
    assert fires.tasks() == ["ipv"]
    del s  # no stop(): as if the process died here

    again = Fires()
    s2 = Stream(again, state_dir=tmp_path)
    s2.register_trigger("big", BIG_CLICK)
    s2.register_trigger("ipv", ITEMS_PER_VISIT)
    s2.start()
    try:
        s2.emit("click", "item", "buy", {"price": 250}, ts=5200)
        s2.emit("page_exit", "item", ts=6000)
        assert s2.flush()
    finally:
        s2.stop()
    # The visit began before the restart; the first run's fire is not delivered again.
    assert again.tasks() == ["big", "ipv"]
    assert [e.kind for e in again.calls[1][2]] == ["page_enter", "exposure", "click", "page_exit"]
    assert again.calls[1][2].aggregates == {"exposures": 1, "items": 1}


def test_events_logged_but_not_processed_before_a_crash_fire_after_restart(tmp_path: Path) -> None:
    first = Stream(state_dir=tmp_path)
    first.register_trigger("ipv", ITEMS_PER_VISIT)
    first.stop()
    store = EventStore(tmp_path / "events.sqlite3")
    logged = [
        Event("page_enter", "item", ts=0, seq=0, visit=0),
        Event("page_exit", "item", ts=10, seq=1, visit=0),
    ]
    store.commit_batch(logged, processed_through=None)
    store.close()
    fires = Fires()
    s = Stream(fires, state_dir=tmp_path)
    s.register_trigger("ipv", ITEMS_PER_VISIT)
    assert s.recover() == 2
    assert [(t, seq) for t, seq, _ in fires.calls] == [("ipv", 1)]
    s.stop()
    # ... and once delivered, a second restart stays quiet.
    quiet = Fires()
    s = Stream(quiet, state_dir=tmp_path)
    s.register_trigger("ipv", ITEMS_PER_VISIT)
    s.recover()
    assert quiet.calls == []
    s.stop()


def test_a_changed_trigger_counts_from_its_new_registration(tmp_path: Path) -> None:
    s = Stream(state_dir=tmp_path)
    s.register_trigger("t", ITEMS_PER_VISIT)
    visit(s, "item", [], 0)
    s.process_pending()
    s.stop()
    s = Stream(state_dir=tmp_path)
    s.register_trigger("t", {**ITEMS_PER_VISIT, "window": {"type": "last_n", "n": 3}})
    assert s.matcher.since_seq("t") == 2  # after the 2 events the old version saw
    s.stop()


def test_explain_says_which_step_never_advanced_and_why() -> None:
    s = Stream()
    s.register_trigger("big", BIG_CLICK)
    visit(s, "item", ["a"], 0, price=20)
    visit(s, "item", ["b"], 2000, price=30)
    s.process_pending()
    ex = s.explain("big")
    assert ex.fired == [] and ex.deepest == 1
    assert ex.steps[1] == {"shape": 2, "args": 0, "keyed": 0, "advanced": 0}
    assert "step 2 never advanced: its predicates never held" in str(ex)
    visit(s, "item", [], 4000, price=300)
    s.process_pending()
    ex = s.explain("big")
    assert ex.fired == [s.stats()["next_seq"] - 2]
    assert "fired 1 time(s)" in str(ex)


def test_explain_names_the_registered_tasks_when_asked_about_an_unknown_one() -> None:
    s = Stream()
    s.register_trigger("big", BIG_CLICK)
    assert "registered: big" in str(s.explain("nope"))


def test_explain_reports_partials_ended_by_the_time_bound() -> None:
    s = Stream()
    s.register_trigger("fast", {**BIG_CLICK, "within_ms": 100})
    visit(s, "item", [], 0, price=500)  # the click comes 500 ms after the enter
    s.process_pending()
    ex = s.explain("fast")
    assert ex.fired == [] and ex.killed["within_ms"] == 1
    data: dict[str, Any] = ex.to_dict()
    assert data["task_id"] == "fast"


def test_the_command_line_explains_a_trigger_over_the_persisted_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from walle_device.stream.__main__ import main

    s = Stream(state_dir=tmp_path / "state")
    visit(s, "item", ["a", "b"], 0, price=20)
    s.process_pending()
    s.stop()
    spec = tmp_path / "config.json"
    spec.write_text(json.dumps({"trigger": BIG_CLICK}))
    assert main(["explain", "--state-dir", str(tmp_path / "state"), "--trigger", str(spec)]) == 0
    assert "step 2 never advanced: its predicates never held" in capsys.readouterr().out
    spec.write_text(json.dumps({"steps": [{"kind": "tap"}]}))
    assert main(["validate", str(spec)]) == 1
    assert "unknown kind 'tap'" in capsys.readouterr().err
    spec.write_text(json.dumps(BIG_CLICK))
    assert main(["explain", "--state-dir", str(tmp_path / "nope"), "--trigger", str(spec)]) == 1
