"""The seeded §9 workload: deterministic, with the documented shape."""

from __future__ import annotations

import itertools
import math
import statistics
from collections import Counter

from walle_device.stream.events import sequence
from walle_device.stream.spec import validate_trigger
from walle_device.stream.workload import generate_events, generate_triggers, page_names


def test_the_same_seed_gives_the_same_events_and_triggers() -> None:
    assert generate_events(3, 500) == generate_events(3, 500)
    assert generate_events(3, 500) != generate_events(4, 500)
    assert generate_triggers(3, 50) == generate_triggers(3, 50)


def test_sessions_have_the_documented_shape() -> None:
    evs = generate_events(1, 60_000)
    kinds = Counter(e["kind"] for e in evs)
    visits = kinds["page_enter"]
    assert abs(kinds["page_exit"] - visits) <= 1
    assert 10.5 < kinds["exposure"] / visits < 13.5
    assert 3.3 < kinds["scroll"] / visits < 4.7
    assert 1.2 < kinds["click"] / visits < 1.8
    pages = Counter(e["page"] for e in evs if e["kind"] == "page_enter")
    assert len(page_names()) == 200 and set(pages) <= set(page_names())
    top, second = (n for _, n in pages.most_common(2))
    assert top > 1.5 * second  # Zipf-skewed popularity
    items = {e["args"]["item"] for e in evs if "item" in e["args"]}
    assert all(0 <= int(i[1:]) < 10_000 for i in items)
    gaps = [b["ts"] - a["ts"] for a, b in itertools.pairwise(evs) if b["ts"] > a["ts"]]
    assert 200 < statistics.median(gaps) < 400
    assert all(e["ts"] <= f["ts"] for e, f in itertools.pairwise(evs))


def test_every_visit_is_enter_then_middle_then_exit_on_one_page() -> None:
    evs = sequence(generate_events(2, 5_000))
    for prev, e in itertools.pairwise(evs):
        if e.kind == "page_enter":
            assert prev.kind == "page_exit"
        else:
            assert e.visit is not None and e.page == prev.page and prev.kind != "page_exit"


def test_trigger_sets_have_the_documented_mix() -> None:
    specs = generate_triggers(9, 4_000)
    assert all(validate_trigger(s) == [] for s in specs)
    lengths = Counter(len(s["steps"]) for s in specs)
    for n, share in ((1, 0.10), (2, 0.40), (3, 0.30), (4, 0.20)):
        assert math.isclose(lengths[n] / len(specs), share, abs_tol=0.03)
    within = sum("within_ms" in s for s in specs) / len(specs)
    preds = sum(any("where" in st for st in s["steps"]) for s in specs) / len(specs)
    visit = sum(s["key"] == "visit" for s in specs) / len(specs)
    assert 0.28 < within < 0.39 and 0.16 < preds < 0.24 and visit > 0.7
    firsts = Counter(str(sorted(s["steps"][0].items())) for s in specs)
    hot = sum(n for _, n in firsts.most_common(50))
    assert hot / len(specs) > 0.6  # most share one of ~50 hot prefixes
