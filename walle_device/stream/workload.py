"""Seeded synthetic app sessions and trigger sets (DESIGN §9), so stream numbers compare across changes.

Sessions: ~200 pages with Zipf-skewed popularity; per visit a page_enter, a geometric number
of exposures (mean 12), scrolls (mean 4) and clicks (mean 1.5) in random order, then a
page_exit; items from 10k ids (also Zipf); gaps log-normal with a 300 ms median.
Trigger sets: 10/40/30/20% with 1/2/3/4 steps, most starting with one of ~50 hot prefixes,
a third with within_ms, a fifth with arg predicates, most keyed on the page visit.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["Workload", "generate_events", "generate_triggers", "iter_events", "page_names"]


@dataclass(frozen=True)
class Workload:
    """The knobs of the synthetic workload; the defaults are the ones DESIGN §9 fixes."""

    pages: int = 200
    page_zipf: float = 1.1
    items: int = 10_000
    item_zipf: float = 0.9
    exposures_mean: float = 12.0
    scrolls_mean: float = 4.0
    clicks_mean: float = 1.5
    gap_median_ms: float = 300.0
    gap_sigma: float = 0.8
    start_ts: int = 1_700_000_000_000
    hot_prefixes: int = 50


def page_names(n: int = 200) -> list[str]:
    """Page ids: a few app-wide pages, list pages and (most) item pages, most popular first."""
    fixed = ["home", "search", "cart", "profile", "checkout"]
    lists = [f"list_{i}" for i in range(max(0, (n - len(fixed)) // 4))]
    items = [f"item_{i}" for i in range(max(0, n - len(fixed) - len(lists)))]
    # Interleave so popularity is spread over every page type, deterministically.
    rest = [p for pair in itertools.zip_longest(items, lists) for p in pair if p is not None]
    return (fixed + rest)[:n]


def _zipf_cdf(n: int, s: float) -> list[float]:
    return list(itertools.accumulate(1.0 / (r**s) for r in range(1, n + 1)))


def _pick(rng: random.Random, cdf: list[float]) -> int:
    return bisect.bisect_left(cdf, rng.random() * cdf[-1])


def _geometric(rng: random.Random, mean: float) -> int:
    # Failures before the first success with p = 1 / (1 + mean): mean failures = `mean`.
    p = 1.0 / (1.0 + mean)
    return int(math.log(1.0 - rng.random()) / math.log(1.0 - p))


def iter_events(seed: int, w: Workload | None = None) -> Iterator[dict[str, Any]]:
    """An endless, seeded stream of app-session events as emit-style dicts."""
    w = w or Workload()
    rng = random.Random(seed)
    pages = page_names(w.pages)
    page_cdf = _zipf_cdf(len(pages), w.page_zipf)
    item_cdf = _zipf_cdf(w.items, w.item_zipf)
    mu = math.log(w.gap_median_ms)
    ts = float(w.start_ts)

    def item() -> str:
        return f"i{_pick(rng, item_cdf)}"

    while True:
        page = pages[_pick(rng, page_cdf)]
        middle: list[tuple[str, str, dict[str, Any]]] = []
        for pos in range(_geometric(rng, w.exposures_mean)):
            middle.append(("exposure", "impression", {"item": item(), "pos": pos}))
        for depth in range(_geometric(rng, w.scrolls_mean)):
            middle.append(("scroll", "scroll", {"depth": depth + 1}))
        for _ in range(_geometric(rng, w.clicks_mean)):
            name = "add_to_cart" if rng.random() < 0.2 else "item_click"
            price = round(rng.lognormvariate(math.log(30), 1.0), 2)
            middle.append(("click", name, {"item": item(), "price": price}))
        rng.shuffle(middle)
        enter_ts = ts
        yield {"kind": "page_enter", "page": page, "event": "", "args": {}, "ts": int(ts)}
        for kind, name, args in middle:
            ts += rng.lognormvariate(mu, w.gap_sigma)
            yield {"kind": kind, "page": page, "event": name, "args": args, "ts": int(ts)}
        ts += rng.lognormvariate(mu, w.gap_sigma)
        yield {
            "kind": "page_exit",
            "page": page,
            "event": "",
            "args": {"dwell_ms": int(ts - enter_ts)},
            "ts": int(ts),
        }
        ts += rng.lognormvariate(mu, w.gap_sigma)


def generate_events(seed: int, n: int, w: Workload | None = None) -> list[dict[str, Any]]:
    """The first n events of the seeded session stream."""
    return list(itertools.islice(iter_events(seed, w), n))


# Later steps, weighted towards what product triggers look for: a visit's end, a click on
# something specific; a bare "any exposure" step fires on most events of a visit.
_LATER_STEPS = [
    ({"kind": "page_exit"}, 30),
    ({"kind": "click", "event": "item_click"}, 20),
    ({"kind": "click", "event": "add_to_cart"}, 15),
    ({"kind": "click"}, 10),
    ({"kind": "scroll"}, 10),
    ({"kind": "exposure", "event": "impression"}, 15),
]
_PREDICATES = [
    ("click", {"arg": "price", "op": "gt", "value": 50}),
    ("click", {"arg": "price", "op": "le", "value": 20}),
    ("exposure", {"arg": "pos", "op": "lt", "value": 5}),
    ("exposure", {"arg": "item", "op": "prefix", "value": "i1"}),
    ("click", {"arg": "item", "op": "in", "value": ["i0", "i1", "i2", "i3"]}),
    ("scroll", {"arg": "depth", "op": "ge", "value": 3}),
]


def generate_triggers(seed: int, n: int, w: Workload | None = None) -> list[dict[str, Any]]:
    """n seeded trigger specs with the §9 mix of lengths, prefixes, time bounds and predicates."""
    w = w or Workload()
    rng = random.Random(seed)
    pages = page_names(w.pages)
    popular = pages[: max(10, w.pages // 4)]
    hot = []
    for i in range(w.hot_prefixes):
        page = popular[i % len(popular)]
        kind = "page_enter" if i % 5 else rng.choice(["exposure", "click"])
        hot.append({"kind": kind, "page": page})
    specs = []
    for _ in range(n):
        nsteps = rng.choices([1, 2, 3, 4], weights=[10, 40, 30, 20])[0]
        r = rng.random()
        key = "visit" if r < 0.8 else "none" if r < 0.9 else "arg:item"
        if key == "arg:item":
            first = {"kind": rng.choice(["exposure", "click"]), "page": rng.choice(popular)}
        elif rng.random() < 0.85:
            first = dict(rng.choice(hot))
        else:
            first = {"kind": "page_enter", "page": rng.choice(pages)}
        steps = [first]
        for _ in range(nsteps - 1):
            # Item-keyed matches have no page_exit (it carries no item) and skip scrolls.
            choices = _LATER_STEPS[1:] if key == "arg:item" else _LATER_STEPS
            step = dict(rng.choices([c[0] for c in choices], weights=[c[1] for c in choices])[0])
            if key != "visit" and rng.random() < 0.5:
                step["page"] = first["page"]
            steps.append(step)
        spec: dict[str, Any] = {"steps": steps, "key": key}
        # Uncorrelated and item-keyed sequences without a time bound would match across
        # hours of use, so those always get one; visit-keyed ones make up the third.
        if key != "visit" or rng.random() < (1 / 3 - 0.2) / 0.8:
            spec["within_ms"] = rng.choice([2_000, 5_000, 10_000, 30_000, 60_000])
        if rng.random() < 1 / 5:
            kind, pred = rng.choice(_PREDICATES)
            target = next((s for s in steps if s["kind"] == kind), None)
            if target is None:
                # Replace the last step rather than add one, so the length mix stays exact.
                target = (
                    {"kind": kind, "page": first["page"]} if len(steps) == 1 else {"kind": kind}
                )
                steps[-1] = target
            target["where"] = [dict(pred)]
        if rng.random() < 0.05:
            spec["contiguity"] = "strict"
        if rng.random() < 0.05:
            spec["not_between"] = {"kind": "click", "event": "add_to_cart"}
        specs.append(spec)
    return specs
