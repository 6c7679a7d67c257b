"""The trigger spec: the JSON a task author writes under "trigger" in the task config.

`validate_trigger` is pure and imports nothing beyond the standard library, so the cloud
calls it at upload time; `compile_trigger` turns a valid spec into the immutable form the
matcher indexes. The reference for authors is docs/stream.md.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from walle_device.stream.events import KINDS, MAX_ID_CHARS

__all__ = [
    "AGG_OPS",
    "PRED_OPS",
    "WINDOW_TYPES",
    "Pattern",
    "Trigger",
    "TriggerError",
    "compile_trigger",
    "validate_trigger",
]

MAX_STEPS = 8
MAX_PREDICATES = 8
MAX_IN_VALUES = 64
MAX_WITHIN_MS = 7 * 24 * 3600 * 1000
MAX_WINDOW_EVENTS = 10_000
MAX_AGGREGATES = 16
PRED_OPS = ("eq", "ne", "in", "exists", "lt", "le", "gt", "ge", "prefix")
WINDOW_TYPES = ("session", "last_n", "last_ms", "since_start", "tumbling", "hopping")
AGG_OPS = ("count", "sum", "min", "max", "distinct", "last_k", "top_k")
CONTIGUITY = ("relaxed", "strict")
_TOP_KEYS = {"steps", "contiguity", "within_ms", "key", "not_between", "window", "aggregates"}
_STEP_KEYS = {"kind", "page", "event", "where"}
_SCALAR = (str, int, float, bool, type(None))


class TriggerError(ValueError):
    """A trigger spec that does not validate; `errors` lists every problem found."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("invalid trigger: " + "; ".join(errors))
        self.errors = errors


def _is_num(v: Any) -> bool:
    # Ints are always finite (and math.isfinite overflows on huge ones); bools are not numbers.
    if isinstance(v, bool):
        return False
    return isinstance(v, int) or (isinstance(v, float) and math.isfinite(v))


def _check_ids(where: str, name: str, value: Any, errors: list[str], kinds: bool) -> None:
    if value is None or value == "*":
        return
    values = value if isinstance(value, list) else [value]
    if isinstance(value, list) and not value:
        errors.append(f"{where}.{name}: an empty list matches nothing; omit it or use '*'")
        return
    for v in values:
        if not isinstance(v, str) or not v:
            errors.append(f"{where}.{name}: expected a non-empty string, a list of them or '*'")
            return
        if len(v) > MAX_ID_CHARS:
            errors.append(f"{where}.{name}: {v[:20]!r}... is longer than {MAX_ID_CHARS} chars")
        if kinds and v not in KINDS:
            errors.append(f"{where}.kind: unknown kind {v!r}; use one of {', '.join(KINDS)}")


def _check_pred(where: str, p: Any, errors: list[str]) -> None:
    if not isinstance(p, dict):
        errors.append(
            f'{where}: expected an object like {{"arg": "price", "op": "gt", "value": 10}}'
        )
        return
    extra = set(p) - {"arg", "op", "value"}
    if extra:
        errors.append(f"{where}: unknown field(s) {', '.join(sorted(extra))}")
    arg, op = p.get("arg"), p.get("op")
    if not isinstance(arg, str) or not arg:
        errors.append(f"{where}.arg: expected the name of an event arg")
    if op not in PRED_OPS:
        errors.append(f"{where}.op: {op!r} is not one of {', '.join(PRED_OPS)}")
        return
    has, v = "value" in p, p.get("value")
    if op == "exists":
        if has and not isinstance(v, bool):
            errors.append(f"{where}.value: exists takes true or false (default true)")
    elif not has:
        errors.append(f"{where}.value: {op} needs a value")
    elif op in ("lt", "le", "gt", "ge"):
        if not _is_num(v):
            errors.append(f"{where}.value: {op} compares numbers; got {v!r}")
    elif op == "prefix":
        if not isinstance(v, str):
            errors.append(f"{where}.value: prefix takes a string; got {v!r}")
    elif op == "in":
        if not isinstance(v, list) or not v:
            errors.append(f"{where}.value: in takes a non-empty list of scalars")
        elif len(v) > MAX_IN_VALUES:
            errors.append(f"{where}.value: in takes at most {MAX_IN_VALUES} values")
        elif not all(isinstance(x, _SCALAR) for x in v):
            errors.append(f"{where}.value: in takes strings, numbers, booleans or null")
    elif not isinstance(v, _SCALAR):
        errors.append(f"{where}.value: {op} compares a string, number, boolean or null")


def _check_pattern(where: str, s: Any, errors: list[str]) -> None:
    if not isinstance(s, dict):
        errors.append(f'{where}: expected an object like {{"kind": "click", "page": "item"}}')
        return
    extra = set(s) - _STEP_KEYS
    if extra:
        errors.append(
            f"{where}: unknown field(s) {', '.join(sorted(extra))}; "
            f"a step has {', '.join(sorted(_STEP_KEYS))}"
        )
    _check_ids(where, "kind", s.get("kind"), errors, kinds=True)
    _check_ids(where, "page", s.get("page"), errors, kinds=False)
    _check_ids(where, "event", s.get("event"), errors, kinds=False)
    preds = s.get("where", [])
    if not isinstance(preds, list):
        errors.append(f"{where}.where: expected a list of predicates")
        return
    if len(preds) > MAX_PREDICATES:
        errors.append(f"{where}.where: at most {MAX_PREDICATES} predicates per step")
    for i, p in enumerate(preds):
        _check_pred(f"{where}.where[{i}]", p, errors)


def _check_window(w: Any, errors: list[str]) -> None:
    if not isinstance(w, dict):
        errors.append('window: expected an object like {"type": "session"}')
        return
    t = w.get("type")
    if t not in WINDOW_TYPES:
        errors.append(f"window.type: {t!r} is not one of {', '.join(WINDOW_TYPES)}")
        return
    need = {
        "session": (),
        "since_start": (),
        "last_n": ("n",),
        "last_ms": ("ms",),
        "tumbling": ("size_ms",),
        "hopping": ("size_ms", "hop_ms"),
    }[t]
    extra = set(w) - {"type", *need}
    if extra:
        errors.append(f"window: unknown field(s) {', '.join(sorted(extra))} for type {t}")
    for k in need:
        v = w.get(k)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            errors.append(f"window.{k}: expected a positive integer")
        elif k == "n" and v > MAX_WINDOW_EVENTS:
            errors.append(f"window.n: at most {MAX_WINDOW_EVENTS}")
    if t == "hopping":
        size, hop = w.get("size_ms"), w.get("hop_ms")
        if isinstance(size, int) and isinstance(hop, int) and 0 < size < hop:
            errors.append("window.hop_ms: must not exceed size_ms (gaps would drop events)")


def _check_aggregates(aggs: Any, errors: list[str]) -> None:
    if not isinstance(aggs, list):
        errors.append("aggregates: expected a list")
        return
    if len(aggs) > MAX_AGGREGATES:
        errors.append(f"aggregates: at most {MAX_AGGREGATES}")
    names: set[str] = set()
    for i, a in enumerate(aggs):
        where = f"aggregates[{i}]"
        if not isinstance(a, dict):
            errors.append(f'{where}: expected an object like {{"name": "n", "op": "count"}}')
            continue
        extra = set(a) - {"name", "op", "arg", "k"}
        if extra:
            errors.append(f"{where}: unknown field(s) {', '.join(sorted(extra))}")
        name, op = a.get("name"), a.get("op")
        if not isinstance(name, str) or not name:
            errors.append(f"{where}.name: expected a non-empty string")
        elif name in names:
            errors.append(f"{where}.name: {name!r} is used twice")
        else:
            names.add(name)
        if op not in AGG_OPS:
            errors.append(f"{where}.op: {op!r} is not one of {', '.join(AGG_OPS)}")
            continue
        arg = a.get("arg")
        if op != "count" and (not isinstance(arg, str) or not arg):
            errors.append(f"{where}.arg: {op} needs the name of an event arg")
        if arg is not None and not isinstance(arg, str):
            errors.append(f"{where}.arg: expected a string")
        if op in ("last_k", "top_k"):
            k = a.get("k")
            if not isinstance(k, int) or isinstance(k, bool) or not 0 < k <= 1000:
                errors.append(f"{where}.k: {op} needs k between 1 and 1000")


def validate_trigger(spec: Any) -> list[str]:
    """Every problem with a trigger spec as a human-readable message; empty when valid."""
    errors: list[str] = []
    if not isinstance(spec, dict):
        return ['trigger: expected an object like {"steps": [{"kind": "page_enter"}]}']
    extra = set(spec) - _TOP_KEYS
    if extra:
        errors.append(
            f"trigger: unknown field(s) {', '.join(sorted(extra))}; "
            f"allowed: {', '.join(sorted(_TOP_KEYS))}"
        )
    steps = spec.get("steps")
    if not isinstance(steps, list) or not steps:
        errors.append("trigger.steps: expected a non-empty list of step patterns")
    else:
        if len(steps) > MAX_STEPS:
            errors.append(f"trigger.steps: at most {MAX_STEPS} steps (got {len(steps)})")
        for i, s in enumerate(steps):
            _check_pattern(f"steps[{i}]", s, errors)
    cont = spec.get("contiguity", "relaxed")
    if cont not in CONTIGUITY:
        errors.append(f"trigger.contiguity: {cont!r} is not one of relaxed, strict")
    if "within_ms" in spec and spec["within_ms"] is not None:
        w = spec["within_ms"]
        if not isinstance(w, int) or isinstance(w, bool) or not 0 < w <= MAX_WITHIN_MS:
            errors.append(f"trigger.within_ms: expected an integer in 1..{MAX_WITHIN_MS}")
    key = spec.get("key", "none")
    if not isinstance(key, str) or not (
        key in ("visit", "none") or (key.startswith("arg:") and len(key) > 4)
    ):
        errors.append(f"trigger.key: {key!r} must be 'visit', 'none' or 'arg:<name>'")
    if spec.get("not_between") is not None:
        _check_pattern("not_between", spec["not_between"], errors)
    if "window" in spec:
        _check_window(spec["window"], errors)
    if "aggregates" in spec:
        _check_aggregates(spec["aggregates"], errors)
    return errors


def _ids(value: Any) -> tuple[str, ...] | None:
    if value is None or value == "*":
        return None
    return tuple(sorted(set(value))) if isinstance(value, list) else (value,)


def _same(a: Any, b: Any) -> bool:
    # JSON equality: 1 == 1.0, but true is not 1 and "1" is not 1.
    if _is_num(a) and _is_num(b):
        return a == b
    return type(a) is type(b) and a == b


def _pred_ok(args: dict[str, Any], arg: str, op: str, value: Any) -> bool:
    # Every op but `exists` needs the arg present: a missing price is neither > 10 nor != 10.
    if arg not in args:
        return op == "exists" and value is False
    a = args[arg]
    if op == "exists":
        return value is not False
    if op == "eq":
        return _same(a, value)
    if op == "ne":
        return not _same(a, value)
    if op == "in":
        return any(_same(a, v) for v in value)
    if op == "prefix":
        return isinstance(a, str) and a.startswith(value)
    if not _is_num(a):
        return False
    if op == "lt":
        return a < value
    if op == "le":
        return a <= value
    if op == "gt":
        return a > value
    return a >= value


_MISS: Any = object()
_CMP = {"lt": operator.lt, "le": operator.le, "gt": operator.gt, "ge": operator.ge}


def _compile_pred(arg: str, op: str, value: Any) -> Callable[[dict[str, Any]], bool]:
    """A closure equivalent to `_pred_ok` for one predicate (the reference stays `_pred_ok`)."""
    # The matcher evaluates predicates on every candidate event, so the common ops get a
    # closure with no dispatch on `op`; the rest defer to the reference.
    if op == "exists":
        if value is False:
            return lambda a: arg not in a
        return lambda a: arg in a
    if op in _CMP:
        cmp = _CMP[op]
        isfinite = math.isfinite

        def number(a: dict[str, Any]) -> bool:
            v = a.get(arg, _MISS)
            c = v.__class__
            return (c is int or (c is float and isfinite(v))) and cmp(v, value)

        return number
    if op == "prefix":

        def prefix(a: dict[str, Any]) -> bool:
            v = a.get(arg, _MISS)
            return isinstance(v, str) and v.startswith(value)

        return prefix
    if op == "eq" and value.__class__ is str:
        return lambda a: (v := a.get(arg, _MISS)).__class__ is str and v == value
    return lambda a: _pred_ok(a, arg, op, value)


def _compile_where(where: tuple[tuple[str, str, Any], ...]) -> Callable[[dict[str, Any]], bool]:
    tests = tuple(_compile_pred(*w) for w in where)
    if len(tests) == 1:
        return tests[0]

    def every(a: dict[str, Any]) -> bool:
        for t in tests:
            if not t(a):
                return False
        return True

    return every


@dataclass(frozen=True, slots=True)
class Pattern:
    """One step (or guard): which kinds/pages/events it accepts and predicates on args."""

    kinds: tuple[str, ...] | None
    pages: tuple[str, ...] | None
    events: tuple[str, ...] | None
    where: tuple[tuple[str, str, Any], ...] = ()
    #: The compiled predicates (None when there are none); not part of the identity.
    test: Callable[[dict[str, Any]], bool] | None = field(
        default=None, compare=False, repr=False, hash=False
    )

    def __post_init__(self) -> None:
        if self.where and self.test is None:
            object.__setattr__(self, "test", _compile_where(self.where))

    @property
    def label(self) -> tuple[Any, ...]:
        """A hashable identity: equal patterns share a trie edge."""
        return (self.kinds, self.pages, self.events, self.where)

    def index_keys(self) -> list[tuple[str | None, str | None, str | None]]:
        """The (kind, page, event) keys, None for 'any', under which the matcher files it."""
        return [
            (k, p, e)
            for k in (self.kinds or (None,))
            for p in (self.pages or (None,))
            for e in (self.events or (None,))
        ]

    def check_args(self, args: dict[str, Any]) -> bool:
        """True when every predicate holds for these args."""
        return self.test is None or self.test(args)

    def shape_matches(self, kind: str, page: str, event: str) -> bool:
        """True when kind, page and event fit, ignoring the predicates."""
        return (
            (self.kinds is None or kind in self.kinds)
            and (self.pages is None or page in self.pages)
            and (self.events is None or event in self.events)
        )

    def matches(self, kind: str, page: str, event: str, args: dict[str, Any]) -> bool:
        """True when an event with these fields satisfies the pattern."""
        if self.kinds is not None and kind not in self.kinds:
            return False
        if self.pages is not None and page not in self.pages:
            return False
        if self.events is not None and event not in self.events:
            return False
        return not self.where or self.check_args(args)


@dataclass(frozen=True, slots=True)
class Trigger:
    """A compiled trigger spec."""

    steps: tuple[Pattern, ...]
    strict: bool = False
    within_ms: int | None = None
    key: str = "none"  # "visit", "none" or "arg:<name>"
    guard: Pattern | None = None
    window: dict[str, Any] = field(default_factory=lambda: {"type": "since_start"})
    aggregates: tuple[dict[str, Any], ...] = ()
    source: str = ""  # canonical JSON of the spec, to recognise a re-registration

    @property
    def mode(self) -> tuple[Any, ...]:
        """Everything besides the steps that decides whether two partial matches are shared."""
        return (self.strict, self.key, self.guard.label if self.guard else None)


def _pattern(s: dict[str, Any]) -> Pattern:
    where = []
    for p in s.get("where", []):
        op, v = p["op"], p.get("value", True if p["op"] == "exists" else None)
        if op == "in":
            v = tuple(v)
        where.append((p["arg"], op, v))
    where.sort(key=lambda t: (t[0], t[1], json.dumps(t[2], sort_keys=True, default=list)))
    return Pattern(_ids(s.get("kind")), _ids(s.get("page")), _ids(s.get("event")), tuple(where))


def compile_trigger(spec: dict[str, Any]) -> Trigger:
    """Validate and compile a spec; raises TriggerError listing every problem."""
    errors = validate_trigger(spec)
    if errors:
        raise TriggerError(errors)
    guard = spec.get("not_between")
    return Trigger(
        steps=tuple(_pattern(s) for s in spec["steps"]),
        strict=spec.get("contiguity", "relaxed") == "strict",
        within_ms=spec.get("within_ms"),
        key=spec.get("key", "none"),
        guard=_pattern(guard) if guard is not None else None,
        window=dict(spec.get("window") or {"type": "since_start"}),
        aggregates=tuple(dict(a) for a in spec.get("aggregates", [])),
        source=json.dumps(spec, sort_keys=True, separators=(",", ":")),
    )
