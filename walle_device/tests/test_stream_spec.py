"""The trigger spec: what validates, what each error says, and predicate semantics."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from walle_device.stream.spec import (
    PRED_OPS,
    TriggerError,
    _compile_pred,
    _is_num,
    _pred_ok,
    compile_trigger,
    validate_trigger,
)

ITEM_VISIT = {
    "steps": [
        {"kind": "page_enter", "page": "item"},
        {
            "kind": "click",
            "event": ["add_to_cart", "buy"],
            "where": [{"arg": "price", "op": "gt", "value": 10}],
        },
        {"kind": "page_exit"},
    ],
    "contiguity": "relaxed",
    "within_ms": 60_000,
    "key": "visit",
    "not_between": {"kind": "scroll"},
    "window": {"type": "session"},
    "aggregates": [
        {"name": "n", "op": "count"},
        {"name": "items", "op": "distinct", "arg": "item"},
    ],
}


def test_a_complete_spec_is_valid() -> None:
    assert validate_trigger(ITEM_VISIT) == []
    t = compile_trigger(ITEM_VISIT)
    assert len(t.steps) == 3 and t.key == "visit" and t.within_ms == 60_000 and t.guard is not None


def test_the_smallest_spec_is_one_step() -> None:
    assert validate_trigger({"steps": [{"kind": "page_enter"}]}) == []
    assert validate_trigger({"steps": [{}]}) == []  # any event


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (None, "expected an object"),
        ({}, "trigger.steps: expected a non-empty list"),
        ({"steps": []}, "trigger.steps: expected a non-empty list"),
        ({"steps": [{"kind": "tap"}]}, "unknown kind 'tap'; use one of page_enter"),
        ({"steps": [{"kind": "click", "colour": "red"}]}, "unknown field(s) colour"),
        ({"steps": [{"page": []}]}, "an empty list matches nothing"),
        ({"steps": [{"page": 7}]}, "steps[0].page: expected a non-empty string"),
        ({"steps": [{}] * 9}, "at most 8 steps"),
        ({"steps": [{}], "contiguity": "loose"}, "'loose' is not one of relaxed, strict"),
        ({"steps": [{}], "within_ms": 0}, "trigger.within_ms: expected an integer"),
        ({"steps": [{}], "within_ms": "5s"}, "trigger.within_ms: expected an integer"),
        ({"steps": [{}], "key": "user"}, "must be 'visit', 'none' or 'arg:<name>'"),
        ({"steps": [{}], "key": "arg:"}, "must be 'visit', 'none' or 'arg:<name>'"),
        ({"steps": [{}], "triger": 1}, "unknown field(s) triger"),
        (
            {"steps": [{"where": [{"arg": "p", "op": "between", "value": 1}]}]},
            "'between' is not one of eq",
        ),
        ({"steps": [{"where": [{"arg": "p", "op": "gt", "value": "10"}]}]}, "gt compares numbers"),
        ({"steps": [{"where": [{"arg": "p", "op": "gt"}]}]}, "gt needs a value"),
        (
            {"steps": [{"where": [{"arg": "p", "op": "in", "value": []}]}]},
            "in takes a non-empty list",
        ),
        (
            {"steps": [{"where": [{"arg": "p", "op": "in", "value": [[1]]}]}]},
            "in takes strings, numbers",
        ),
        (
            {"steps": [{"where": [{"arg": "p", "op": "prefix", "value": 1}]}]},
            "prefix takes a string",
        ),
        (
            {"steps": [{"where": [{"arg": "p", "op": "exists", "value": 1}]}]},
            "exists takes true or false",
        ),
        ({"steps": [{"where": [{"op": "exists"}]}]}, "where[0].arg: expected the name"),
        ({"steps": [{"where": {"arg": "p"}}]}, "where: expected a list"),
        ({"steps": [{}], "not_between": {"kind": "nope"}}, "not_between.kind: unknown kind"),
        ({"steps": [{}], "window": {"type": "sliding"}}, "'sliding' is not one of session"),
        ({"steps": [{}], "window": {"type": "last_n"}}, "window.n: expected a positive integer"),
        (
            {"steps": [{}], "window": {"type": "hopping", "size_ms": 10, "hop_ms": 20}},
            "must not exceed size_ms",
        ),
        (
            {"steps": [{}], "aggregates": [{"name": "s", "op": "sum"}]},
            "sum needs the name of an event arg",
        ),
        (
            {"steps": [{}], "aggregates": [{"name": "t", "op": "top_k", "arg": "x"}]},
            "top_k needs k",
        ),
        ({"steps": [{}], "aggregates": [{"name": "a", "op": "count"}] * 2}, "'a' is used twice"),
    ],
)
def test_each_mistake_gets_a_message_that_says_how_to_fix_it(spec: Any, message: str) -> None:
    errors = validate_trigger(spec)
    assert any(message in e for e in errors), errors


def test_it_reports_every_problem_at_once() -> None:
    errors = validate_trigger({"steps": [{"kind": "tap"}], "key": "user", "within_ms": -1})
    assert len(errors) == 3


def test_compile_raises_with_the_list_of_errors() -> None:
    with pytest.raises(TriggerError) as info:
        compile_trigger({"steps": [{"kind": "tap"}]})
    assert info.value.errors and "tap" in str(info.value)


def test_importing_the_spec_pulls_in_nothing_heavy() -> None:
    code = (
        "import sys; import walle_device.stream.spec; "
        "bad = [m for m in ('sqlite3', 'threading', 'django', 'asyncio') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


OMIT = object()


def pred(op: str, value: Any = OMIT) -> Any:
    p = {"arg": "x", "op": op, **({"value": value} if value is not OMIT else {})}
    return compile_trigger({"steps": [{"where": [p]}]}).steps[0]


@pytest.mark.parametrize(
    ("op", "value", "args", "expected"),
    [
        ("eq", 1, {"x": 1.0}, True),
        ("eq", 1, {"x": True}, False),  # JSON: true is not 1
        ("eq", "1", {"x": 1}, False),
        ("eq", None, {"x": None}, True),
        ("ne", 1, {"x": 2}, True),
        ("ne", 1, {}, False),  # a missing arg is not "not equal"
        ("in", ["a", "b"], {"x": "b"}, True),
        ("in", ["a", "b"], {"x": "c"}, False),
        ("exists", OMIT, {"x": 0}, True),
        ("exists", OMIT, {}, False),
        ("exists", False, {}, True),
        ("exists", False, {"x": 0}, False),
        ("lt", 10, {"x": 9.5}, True),
        ("lt", 10, {"x": "9"}, False),
        ("le", 10, {"x": 10}, True),
        ("gt", 10, {"x": 10}, False),
        ("ge", 10, {"x": 10}, True),
        ("gt", 0, {"x": True}, False),  # booleans are not numbers here
        ("prefix", "i1", {"x": "i17"}, True),
        ("prefix", "i1", {"x": 17}, False),
    ],
)
def test_predicates_follow_json_semantics(
    op: str, value: Any, args: dict[str, Any], expected: bool
) -> None:
    step = pred(op, value)
    assert step.matches("click", "p", "", args) is expected


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.integers(10**30, 10**31),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "i1", "i17", "x", "1"]),
)
values = st.one_of(scalars, st.lists(scalars, max_size=2), st.dictionaries(st.just("k"), scalars))


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(PRED_OPS),
    scalars,
    st.lists(scalars, min_size=1, max_size=3),
    st.one_of(st.just({}), st.builds(lambda v: {"x": v}, values)),
)
def test_compiled_predicates_agree_with_the_reference(
    op: str, scalar: Any, many: list[Any], args: dict[str, Any]
) -> None:
    value: Any = many if op == "in" else scalar
    if op == "exists":
        value = scalar if isinstance(scalar, bool) else True
    if op in ("lt", "le", "gt", "ge") and not _is_num(value):
        value = 3
    if op == "prefix" and not isinstance(value, str):
        value = "i1"
    if op == "in":
        value = tuple(value)
    assert _compile_pred("x", op, value)(args) == _pred_ok(args, "x", op, value)
