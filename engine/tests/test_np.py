"""walle_engine.np against numpy: values, dtypes, shapes, errors and views."""

from __future__ import annotations

import array
import copy
import json
import math
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.testing import assert_allclose, assert_array_equal
from walle_engine import Tensor
from walle_engine import np as wnp

RNG = numpy.random.default_rng(0)
# numpy dtypes the engine does not have, and what it gives instead.
NARROWED = {
    "float64": "float32",
    "float16": "float32",
    "int8": "int32",
    "int16": "int32",
    "uint16": "int32",
    "uint32": "int64",
    **({} if hasattr(wnp, "uint8") else {"uint8": "int32"}),
}
DTYPES = ["float32", "int32", "int64", "bool"]


def data(shape: tuple[int, ...], dtype: str) -> numpy.ndarray:
    if dtype == "bool":
        return RNG.random(shape) > 0.5
    if dtype.startswith("int"):
        return RNG.integers(-9, 10, shape).astype(dtype)
    return (RNG.standard_normal(shape) * 3).astype(dtype)


def check(ours: object, ref: object, rtol: float = 1e-6, atol: float = 0.0) -> None:
    """``ours`` is an ndarray equal to numpy's ``ref`` in shape, (narrowed) dtype and values."""
    assert isinstance(ours, wnp.ndarray), type(ours)
    ref = numpy.asarray(ref)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    assert ours.dtype == NARROWED.get(ref.dtype.name, ref.dtype.name), (ours.dtype, ref.dtype)
    got = numpy.asarray(ours)
    if ref.dtype.kind == "f":
        assert_allclose(got, ref.astype(numpy.float32), rtol=rtol, atol=atol, equal_nan=True)
    else:
        assert_array_equal(got, ref)


def reference(fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    """numpy's result, without its warnings (division by zero and the like)."""
    with warnings.catch_warnings(), numpy.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return fn(*args, **kw)


# ---- creation and conversion


@pytest.mark.parametrize(
    "obj",
    [
        [1, 2, 3],
        [1.5, 2, -3],
        [True, False],
        [True, 2],
        [[1, 2], [3, 4], [5, 6]],
        ((1.0, 2.0), (3.0, 4.0)),
        [[[1], [2]], [[3], [4]]],
        [],
        [[], []],
        5,
        -2.5,
        True,
        2**40,
    ],
)
def test_array_from_python_data_infers_shape_and_dtype(obj: object) -> None:
    check(wnp.array(obj), numpy.array(obj))
    check(wnp.asarray(obj), numpy.asarray(obj))


@pytest.mark.parametrize(
    ("obj", "dtype"),
    [
        ([1.7, -2.2], "int32"),
        ([1, 0, 3], "bool"),
        ([1, 2], "float32"),
        ([True, False], "int64"),
        ([[1, 2]], "int32"),
        (3.9, "int64"),
    ],
)
def test_array_with_dtype_converts_like_numpy(obj: object, dtype: str) -> None:
    check(wnp.array(obj, dtype=dtype), numpy.array(obj, dtype=dtype))


@pytest.mark.parametrize(
    ("spec", "name"),
    [
        ("float32", "float32"),
        (float, "float32"),
        (int, "int64"),
        (bool, "bool"),
        ("float64", "float32"),
        (numpy.float32, "float32"),
        (numpy.float64, "float32"),
        (numpy.int32, "int32"),
        (numpy.bool_, "bool"),
        (numpy.dtype("int64"), "int64"),
        ("i4", "int32"),
        (wnp.int64, "int64"),
    ],
)
def test_dtype_arguments_accept_numpy_style_specs(spec: object, name: str) -> None:
    a = wnp.zeros(2, dtype=spec)
    assert a.dtype == name and wnp.dtype(spec) == name
    assert a.dtype is getattr(wnp, "bool_" if name == "bool" else name)


def test_dtype_objects_look_like_numpy_dtypes() -> None:
    assert wnp.float32 == "float32" and repr(wnp.float32) == "dtype('float32')"
    assert (wnp.int32.itemsize, wnp.int64.kind, wnp.bool_.name) == (4, "i", "bool")
    check(wnp.float32(1.5), numpy.float32(1.5))
    check(wnp.int64([1, 2]), numpy.int64([1, 2]))
    for bad in ("complex64", "int8", object, "nope"):
        with pytest.raises(TypeError, match="not supported"):
            wnp.zeros(1, dtype=bad)


def test_ragged_and_unsupported_python_data_is_rejected() -> None:
    with pytest.raises(ValueError, match="inhomogeneous shape after 1 dimensions"):
        wnp.array([[1, 2], [3]])
    with pytest.raises(ValueError, match="inhomogeneous"):
        wnp.array([1, [2]])
    with pytest.raises(TypeError, match="cannot convert str"):
        wnp.array(["a"])
    with pytest.raises(OverflowError):
        wnp.array([2**63])
    with pytest.raises(OverflowError):
        wnp.array([2**40], dtype="int32")


def test_nested_arrays_inside_lists_are_data() -> None:
    a = wnp.arange(3)
    check(wnp.array([a, a * 2]), numpy.array([[0, 1, 2], [0, 2, 4]]))
    check(wnp.array([wnp.float32(1.5), 2]), numpy.array([1.5, 2]))


@pytest.mark.parametrize(
    ("fn", "args"),
    [
        ("zeros", ((2, 3),)),
        ("zeros", (4, "int32")),
        ("ones", ((2, 0),)),
        ("ones", ([3], bool)),
        ("empty", (0,)),
        ("full", ((2, 2), 7)),
        ("full", ((2, 2), 2.5)),
        ("full", (3, True)),
        ("full", ((2, 3), [1, 2, 3])),
        ("full", ((2,), 3, "float32")),
    ],
)
def test_filled_arrays(fn: str, args: tuple[object, ...]) -> None:
    ours = getattr(wnp, fn)(*args)
    ref = getattr(numpy, fn)(*args)
    if fn == "empty":
        ref[...] = 0
    check(ours, ref)


def test_like_constructors_follow_the_prototype() -> None:
    p = data((2, 3), "int32")
    for name in ("zeros_like", "ones_like"):
        check(getattr(wnp, name)(p), getattr(numpy, name)(p))
        check(getattr(wnp, name)(p, dtype=float), getattr(numpy, name)(p, dtype=float))
    check(wnp.full_like(p, 4), numpy.full_like(p, 4))
    check(wnp.full_like(p, 4, shape=(5,)), numpy.full_like(p, 4, shape=(5,)))
    check(wnp.empty_like(p), numpy.zeros_like(p))
    with pytest.raises(ValueError, match="negative dimensions"):
        wnp.zeros((2, -1))


@pytest.mark.parametrize(
    "args",
    [
        (5,),
        (2, 9),
        (2, 9, 3),
        (9, 2, -2),
        (5, 1),
        (0,),
        (-3,),
        (0.0, 1.0, 0.1),
        (1.5,),
        (-1, 1, 0.25),
    ],
)
def test_arange(args: tuple[float, ...]) -> None:
    check(wnp.arange(*args), numpy.arange(*args))
    check(wnp.arange(*args, dtype="float32"), numpy.arange(*args, dtype="float32"))


def test_arange_rejects_a_zero_step() -> None:
    with pytest.raises(ZeroDivisionError):
        wnp.arange(0, 5, 0)


@pytest.mark.parametrize(
    "kw",
    [
        {"start": 0, "stop": 1, "num": 5},
        {"start": -2, "stop": 3, "num": 7, "endpoint": False},
        {"start": 1, "stop": 1, "num": 1},
        {"start": 0, "stop": 1, "num": 0},
        {"start": 0, "stop": 10, "num": 4, "dtype": int},
        {"start": -1, "stop": 1, "num": 3, "dtype": "int32"},
        {"start": 5, "stop": -5, "num": 50},
    ],
)
def test_linspace(kw: dict[str, object]) -> None:
    check(wnp.linspace(**kw), numpy.linspace(**kw))


@pytest.mark.parametrize("args", [(3,), (2, 4), (4, 2), (3, 3, 1), (3, 4, -2), (3, 3, 5), (0,)])
def test_eye(args: tuple[int, ...]) -> None:
    check(wnp.eye(*args), numpy.eye(*args, dtype="float32"))
    check(wnp.eye(*args, dtype=int), numpy.eye(*args, dtype=int))


# ---- buffers: zero-copy both ways


def test_asarray_shares_memory_with_numpy_arrays_and_buffers() -> None:
    for dt in DTYPES:
        ref = data((3, 4), dt)
        a = wnp.asarray(ref)
        assert a.dtype == dt and numpy.asarray(a.tensor).ctypes.data == ref.ctypes.data
        ref[1, 2] = ref[0, 0] if dt == "bool" else 5
        assert a[1, 2].item() == ref[1, 2]
    buf = array.array("i", [1, 2, 3])
    a = wnp.asarray(buf)
    buf[0] = 9
    assert a.tolist() == [9, 2, 3] and a.dtype == "int32"
    a = wnp.asarray(memoryview(array.array("f", [1, 2, 3, 4])).cast("B").cast("f", [2, 2]))
    assert a.shape == (2, 2) and a.dtype == "float32"


def test_asarray_returns_arrays_and_wraps_tensors_without_copying() -> None:
    a = wnp.arange(4)
    assert wnp.asarray(a) is a
    assert wnp.asarray(a, dtype=int) is a
    assert wnp.asarray(a.tensor).tensor is a.tensor
    b = wnp.array(a)
    b[0] = 7
    assert a[0] == 0
    c = wnp.array(a, copy=False)
    c[0] = 7
    assert a[0] == 7


@pytest.mark.parametrize(
    "ref",
    [
        numpy.arange(6.0).reshape(2, 3),
        numpy.arange(12, dtype=numpy.float32).reshape(3, 4)[:, ::2],
        numpy.arange(12, dtype=numpy.int64).reshape(3, 4).T,
        numpy.arange(12, dtype=numpy.float32).reshape(3, 4)[::-1, ::-3],
        numpy.array([1.5, -2, 65504, numpy.inf], numpy.float16),
        numpy.array([0, 200, 255], numpy.uint8),
        numpy.array([-5, 300], numpy.int16),
        numpy.array([2**32 - 1], numpy.uint32),
        numpy.array([True, False]),
        numpy.float64(2.5),
        numpy.int32(-3),
        numpy.zeros((0, 3)),
    ],
)
def test_asarray_converts_other_buffers(ref: numpy.ndarray) -> None:
    check(wnp.asarray(ref), numpy.asarray(ref))
    check(wnp.asarray(ref, dtype=float), numpy.asarray(ref, dtype=numpy.float32))


def test_numpy_and_memoryview_see_an_array_without_copying() -> None:
    for dt in DTYPES:
        a = wnp.asarray(data((2, 3), dt)).copy()
        n = numpy.asarray(a)
        assert n.dtype == dt and n.ctypes.data == numpy.asarray(a.tensor).ctypes.data
        m = memoryview(a)
        assert m.shape == (2, 3) and not m.readonly
    a = wnp.zeros(3)
    numpy.asarray(a)[1] = 4
    assert a.tolist() == [0, 4, 0]
    assert numpy.asarray(wnp.float32(2)).shape == ()


def test_read_only_buffers_stay_read_only() -> None:
    a = wnp.asarray(memoryview(b"\x01\x00\x02\x00\x00\x00\x00\x00").cast("q"))
    assert a.tolist() == [131073]
    with pytest.raises(ValueError, match="read-only"):
        a[0] = 1
    with pytest.raises(ValueError, match="read-only"):
        a += 1
    b = wnp.array(a)
    b += 1
    assert b.tolist() == [131074]


def test_unsupported_buffers_are_rejected() -> None:
    with pytest.raises(TypeError, match="unsupported buffer format"):
        wnp.asarray(numpy.array([1 + 2j]))
    with pytest.raises(TypeError, match="cannot convert"):
        wnp.asarray(object())


# ---- attributes, conversion to Python


def test_attributes() -> None:
    ref = data((2, 3, 4), "int32")
    a = wnp.asarray(ref)
    assert (a.shape, a.ndim, a.size, a.itemsize, a.nbytes) == ((2, 3, 4), 3, 24, 4, 96)
    assert (len(a), a.T.shape) == (2, (4, 3, 2))
    check(a.T, ref.T)
    assert isinstance(a.tensor, Tensor)
    assert a.tolist() == ref.tolist()
    assert wnp.zeros((2, 0, 3)).tolist() == [[], []]


def test_scalars_and_python_conversions() -> None:
    a = wnp.array([[1.5, 2.0], [3.0, 4.0]], dtype="float32")
    assert a.item(3) == 4.0 and a.item(-4) == 1.5 and a.item(1, 0) == 3.0
    assert float(a[0, 0]) == 1.5 and int(a[1, 1]) == 4
    assert wnp.array([7]).item() == 7 and isinstance(wnp.array([True]).item(), bool)
    assert [1, 2, 3][wnp.int64(1)] == 2
    assert f"{a[0, 1]:.2f}" == "2.00" and f"{a[0]}" == str(a[0])
    assert 3.0 in a and 5 not in a
    assert bool(wnp.array([1])) and not bool(wnp.array(0.0))
    assert [r.tolist() for r in a] == [[1.5, 2.0], [3.0, 4.0]]
    with pytest.raises(ValueError, match="more than one element is ambiguous"):
        bool(a)
    with pytest.raises(ValueError, match="size 1"):
        a.item()
    with pytest.raises(IndexError):
        a.item(4)
    with pytest.raises(TypeError, match="integer scalar"):
        operator_index(a[0, 0])
    with pytest.raises(TypeError, match="unsized"):
        len(wnp.float32(1))
    with pytest.raises(TypeError, match="0-d"):
        iter(wnp.float32(1))
    with pytest.raises(TypeError):
        hash(a)
    b = copy.deepcopy(a)
    b[0, 0] = 9
    assert a[0, 0] == 1.5


def operator_index(x: object) -> int:
    import operator

    return operator.index(x)


# ---- elementwise binary

BINARY = [
    "add",
    "subtract",
    "multiply",
    "divide",
    "floor_divide",
    "mod",
    "power",
    "maximum",
    "minimum",
    "equal",
    "not_equal",
    "less",
    "less_equal",
    "greater",
    "greater_equal",
    "logical_and",
    "logical_or",
    "logical_xor",
]
PAIRS = [
    ("float32", "float32"),
    ("int32", "int32"),
    ("int64", "int64"),
    ("bool", "bool"),
    ("int32", "int64"),
    ("int32", "float32"),
    ("bool", "int32"),
    ("int64", "float32"),
    ("bool", "float32"),
]
SHAPES = [
    ((), ()),
    ((5,), ()),
    ((), (4,)),
    ((2, 3), (3,)),
    ((2, 1, 4), (3, 1)),
    ((4, 1), (1, 5)),
    ((1,), (6,)),
    ((0,), (1,)),
    ((2, 0, 3), (1, 3)),
    ((3, 4, 5), (3, 4, 5)),
]


def operands(
    op: str, da: str, db: str, sa: tuple[int, ...], sb: tuple[int, ...]
) -> tuple[numpy.ndarray, numpy.ndarray]:
    a, b = data(sa, da), data(sb, db)
    if op == "power" and db != "bool":  # small non-negative exponents
        b = (numpy.abs(b) % 4).astype(db)
    return a, b


@pytest.mark.parametrize("pair", PAIRS, ids="-".join)
@pytest.mark.parametrize("op", BINARY)
def test_binary_ops_match_numpy_with_broadcasting_and_promotion(
    op: str, pair: tuple[str, str]
) -> None:
    for sa, sb in SHAPES:
        a, b = operands(op, *pair, sa, sb)
        try:
            ref = reference(getattr(numpy, op), a, b)
        except TypeError:  # bool - bool
            with pytest.raises(TypeError):
                getattr(wnp, op)(a, b)
            continue
        mixed_float = "float32" in pair and pair[0] != pair[1]
        tol = {"rtol": 1e-5, "atol": 1e-5} if mixed_float or op == "power" else {}
        check(getattr(wnp, op)(a, b), ref, **tol)
        check(getattr(wnp, op)(wnp.asarray(a), wnp.asarray(b)), ref, **tol)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("scalar", [2, -3, 2.5, True, 0.0])
@pytest.mark.parametrize(
    "op", ["add", "subtract", "multiply", "divide", "maximum", "less", "equal"]
)
def test_python_scalars_promote_weakly_like_numpy_2(op: str, scalar: object, dt: str) -> None:
    a = data((2, 3), dt)
    for args in ((a, scalar), (scalar, a)):
        try:
            ref = reference(getattr(numpy, op), *args)
        except TypeError:
            with pytest.raises(TypeError):
                getattr(wnp, op)(*[wnp.asarray(x) if x is a else x for x in args])
            continue
        check(getattr(wnp, op)(*[wnp.asarray(x) if x is a else x for x in args]), ref, rtol=1e-5)
    check(getattr(wnp, op)(scalar, 3), reference(getattr(numpy, op), scalar, 3))


def test_operators_match_numpy() -> None:
    x, y = data((3, 4), "float32"), data((4,), "float32")
    i, j = data((3, 4), "int64"), numpy.abs(data((4,), "int32")) + 1
    m, n = x > 0, y < 1
    a, b, ai, aj, am, an = map(wnp.asarray, (x, y, i, j, m, n))
    cases = [
        (a + b, x + y),
        (a - 1, x - 1),
        (2 * a, 2 * x),
        (1 / a, 1 / x),
        (ai // aj, i // j),
        (ai % aj, i % j),
        (-7 % aj, -7 % j),
        (a**2, x**2),
        (2**aj, 2**j),
        (ai**aj, i**j),
        (a @ a.T, x @ x.T),
        (-a, -x),
        (+ai, +i),
        (abs(ai), abs(i)),
        (~am, ~m),
        (~ai, ~i),
        (am & an, m & n),
        (am | True, m | True),
        (an ^ am, n ^ m),
        (a == b, x == y),
        (ai != 3, i != 3),
        (a < b, x < y),
        (a <= 0.5, x <= 0.5),
        (1 > a, 1 > x),
        (ai >= aj, i >= j),
    ]
    for ours, ref in cases:
        check(ours, ref, rtol=1e-5)


def test_integer_division_edge_cases_match_numpy() -> None:
    for dt in ("int32", "int64"):
        lo = numpy.iinfo(dt).min
        a = numpy.array([7, -7, 7, -7, 0, 5, lo, lo, 3], dtype=dt)
        b = numpy.array([2, 2, -2, -2, 3, 0, -1, 1, -1], dtype=dt)
        for op in ("floor_divide", "mod"):
            check(getattr(wnp, op)(a, b), reference(getattr(numpy, op), a, b))
    with pytest.raises(ValueError, match="negative integer powers"):
        wnp.power(wnp.arange(3), -1)


def test_float_division_edge_cases_match_numpy() -> None:
    a = numpy.array([1, -1, 7.5, -7.5, 0, 1, 0, numpy.inf, -3, 3], numpy.float32)
    b = numpy.array([0.1, 0.1, -2, 2, 0, 0, 3, 2, numpy.inf, -numpy.inf], numpy.float32)
    for op in ("floor_divide", "mod", "divide"):
        check(getattr(wnp, op)(a, b), reference(getattr(numpy, op), a, b))


@settings(max_examples=150, deadline=None)
@given(
    dt=st.sampled_from(["float32", "int32", "int64"]),
    shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=4),
    data_=st.data(),
)
def test_floor_divide_and_mod_match_numpy_on_any_values(
    dt: str, shapes: hnp.BroadcastableShapes, data_: st.DataObject
) -> None:
    elements = (
        st.floats(width=32, allow_subnormal=False)
        if dt == "float32"
        else st.integers(numpy.iinfo(dt).min, numpy.iinfo(dt).max)
    )
    a, b = (data_.draw(hnp.arrays(dt, shape, elements=elements)) for shape in shapes.input_shapes)
    for op in ("floor_divide", "mod"):
        check(getattr(wnp, op)(a, b), reference(getattr(numpy, op), a, b))


def test_maximum_minimum_and_clip_propagate_nan() -> None:
    x = numpy.array([numpy.nan, 1, numpy.nan, 5], numpy.float32)
    y = numpy.array([1, numpy.nan, numpy.nan, 2], numpy.float32)
    check(wnp.maximum(x, y), numpy.maximum(x, y))
    check(wnp.minimum(x, y), numpy.minimum(x, y))
    check(wnp.clip(x, 0, 3), numpy.clip(x, 0, 3))


def test_bool_arithmetic_is_logic_and_subtraction_is_refused() -> None:
    m, n = data((5,), "bool"), data((5,), "bool")
    check(wnp.add(m, n), m + n)
    check(wnp.multiply(m, n), m * n)
    check(wnp.add(m, 1), m + 1)
    with pytest.raises(TypeError, match="boolean subtract"):
        wnp.subtract(m, n)
    with pytest.raises(TypeError, match="boolean negative"):
        -wnp.asarray(m)
    with pytest.raises(TypeError, match="bool arrays only"):
        wnp.arange(3) & 1


def test_broadcast_errors_name_the_shapes() -> None:
    with pytest.raises(
        ValueError, match=r"could not be broadcast together with shapes \(2,3\) \(4,\)"
    ):
        wnp.zeros((2, 3)) + wnp.zeros(4)
    with pytest.raises(ValueError, match="could not be broadcast"):
        wnp.where(wnp.zeros(3, bool), wnp.zeros((2, 1)), wnp.zeros(4))
    with pytest.raises(OverflowError, match="out of bounds for int32"):
        wnp.zeros(2, "int32") + 2**40


def test_unsupported_operands_fall_back_to_python() -> None:
    a = wnp.arange(3)
    assert (a == None) is False  # noqa: E711
    assert a != "x"
    with pytest.raises(TypeError, match="unsupported operand"):
        a + "x"


# ---- in-place operators


def test_in_place_operators_write_into_the_array_and_its_views() -> None:
    ref = data((2, 3), "float32")
    a = wnp.array(ref)
    flat = a.reshape(-1)
    a += 1
    a *= wnp.asarray([1, 2, 3])
    a -= 0.5
    a /= 2
    a **= 2
    ref = ((((ref + 1) * [1, 2, 3]) - 0.5) / 2) ** 2
    check(a, ref, rtol=1e-5)
    check(flat, ref.reshape(-1), rtol=1e-5)
    i = wnp.arange(6)
    i //= 4
    i %= 2
    i += wnp.int32(1)
    check(i, (numpy.arange(6) // 4) % 2 + 1)
    m = wnp.array([True, False])
    m |= wnp.array([False, True])
    m &= True
    check(m, [True, True])


def test_in_place_operators_refuse_unsafe_casts_and_broadcast_outputs() -> None:
    a = wnp.arange(3)
    with pytest.raises(TypeError, match="same_kind"):
        a += 1.5
    with pytest.raises(TypeError, match="same_kind"):
        a /= 2
    with pytest.raises(ValueError, match="non-broadcastable output"):
        a += wnp.zeros((2, 3), int)
    b = wnp.zeros(3, "int32")
    b += wnp.arange(3)  # int64 into int32 is the same kind
    check(b, numpy.arange(3, dtype="int32"))


# ---- elementwise unary

UNARY = [
    "exp",
    "log",
    "sqrt",
    "abs",
    "tanh",
    "sin",
    "cos",
    "floor",
    "ceil",
    "round",
    "sign",
    "negative",
    "square",
]


@pytest.mark.parametrize("dt", ["float32", "int32", "int64"])
@pytest.mark.parametrize("op", UNARY)
def test_unary_ops_match_numpy(op: str, dt: str) -> None:
    x = data((3, 7), dt)
    if op in ("log", "sqrt"):
        x = numpy.abs(x) + 1
    if op == "round" and dt == "float32":
        x[0, :6] = [0.5, 1.5, 2.5, -0.5, -2.5, 3.49]  # half to even
    check(getattr(wnp, op)(x), reference(getattr(numpy, op), x), rtol=2e-6, atol=1e-6)
    e = numpy.zeros((0, 2), dt)
    check(getattr(wnp, op)(e), reference(getattr(numpy, op), e))


def test_unary_ops_on_bool_and_nan() -> None:
    m = numpy.array([True, False])
    for op in ("abs", "floor", "ceil"):
        check(getattr(wnp, op)(m), getattr(numpy, op)(m))
    check(wnp.exp(m), numpy.exp(m.astype(numpy.float32)))  # numpy: float16
    with pytest.raises(TypeError):
        wnp.sign(m)
    x = numpy.array([numpy.nan, -2, 0, numpy.inf, -numpy.inf], numpy.float32)
    for op in ("sign", "abs", "isnan", "isinf", "isfinite", "floor"):
        check(getattr(wnp, op)(x), getattr(numpy, op)(x))
    check(wnp.isnan(numpy.arange(3)), numpy.isnan(numpy.arange(3)))


def test_sigmoid_and_round_with_decimals() -> None:
    x = data((50,), "float32")
    check(wnp.sigmoid(x), 1 / (1 + numpy.exp(-x.astype(numpy.float64))), rtol=1e-5, atol=1e-7)
    check(wnp.round(x, 2), numpy.round(x, 2), rtol=1e-6, atol=1e-6)
    check(wnp.round(numpy.array([15, 25, -35]), -1), numpy.round(numpy.array([15, 25, -35]), -1))
    check(wnp.asarray(x).round(1), x.round(1), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("lo", "hi"), [(0, 2), (-1.5, None), (None, 3), (numpy.zeros(4), numpy.arange(4)), (2, 1)]
)
@pytest.mark.parametrize("dt", DTYPES[:3])
def test_clip(dt: str, lo: object, hi: object) -> None:
    x = data((3, 4), dt)
    check(wnp.clip(x, lo, hi), numpy.clip(x, lo, hi), rtol=1e-6)
    check(wnp.asarray(x).clip(lo, hi), x.clip(lo, hi), rtol=1e-6)


def test_where() -> None:
    c, x, y = data((3, 1), "bool"), data((1, 4), "float32"), data((4,), "int32")
    check(wnp.where(c, x, y), numpy.where(c, x, y))
    check(wnp.where(c, 1, y), numpy.where(c, 1, y))
    check(wnp.where(c, 2.5, 1), numpy.where(c, 2.5, 1))
    check(wnp.where(y, y, -y), numpy.where(y, y, -y))
    for ours, ref in zip(wnp.where(y > 0), numpy.where(y > 0), strict=True):
        check(ours, ref)
    with pytest.raises(ValueError, match="both or neither"):
        wnp.where(c, x)


# ---- reductions

REDUCE = ["sum", "mean", "max", "min", "prod", "std", "var", "any", "all"]
AXES = [None, 0, -1, 1, (0, 2), (2, 0), (-1, -2, 0), ()]


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("op", REDUCE)
def test_reductions_match_numpy(op: str, dt: str) -> None:
    x = data((3, 4, 5), dt)
    if op == "prod" and dt != "bool":
        x = (numpy.abs(x) % 3 + 1).astype(dt)
    for axis in AXES:
        for keepdims in (False, True):
            ref = reference(getattr(numpy, op), x, axis=axis, keepdims=keepdims)
            check(getattr(wnp, op)(x, axis, keepdims=keepdims), ref, rtol=2e-5, atol=1e-5)
    check(getattr(wnp.asarray(x), op)(), getattr(x, op)(), rtol=2e-5)
    check(getattr(wnp.asarray(x), op)(1), getattr(x, op)(1), rtol=2e-5, atol=1e-5)


@pytest.mark.parametrize("op", REDUCE)
def test_reductions_of_empty_and_0d_arrays(op: str) -> None:
    for shape, axis in [
        ((0,), None),
        ((2, 0), 1),
        ((2, 0), 0),
        ((0, 3), None),
        ((), None),
        ((), 0),
    ]:
        x = numpy.ones(shape, numpy.float32)
        try:
            ref = reference(getattr(numpy, op), x, axis=axis)
        except ValueError as e:
            with pytest.raises(ValueError, match=r"zero-size array|out of bounds"):
                getattr(wnp, op)(x, axis)
            assert "zero-size" in str(e) or "out of bounds" in str(e)
            continue
        check(getattr(wnp, op)(x, axis), ref)


def test_reduction_arguments_are_validated() -> None:
    x = wnp.zeros((2, 3))
    with pytest.raises(wnp.AxisError, match="axis 2 is out of bounds for array of dimension 2"):
        wnp.sum(x, 2)
    with pytest.raises(IndexError):  # AxisError is also an IndexError, as in numpy
        x.max(-3)
    with pytest.raises(ValueError, match="duplicate value in 'axis'"):
        wnp.mean(x, (0, -2))


def test_reductions_propagate_nan_on_every_axis() -> None:
    x = numpy.arange(24, dtype=numpy.float32).reshape(2, 3, 4)
    x[0, 1, 2] = x[1, 0, 0] = numpy.nan
    for op in ("max", "min", "sum", "mean"):
        for axis in (None, 0, 1, 2, (0, 1)):
            check(getattr(wnp, op)(x, axis), getattr(numpy, op)(x, axis=axis))
    for op in ("argmax", "argmin"):
        for axis in (None, 0, 1, 2):
            check(getattr(wnp, op)(x, axis), getattr(numpy, op)(x, axis=axis))


def test_sum_and_mean_with_dtype_and_ddof() -> None:
    x = data((4, 5), "int32")
    check(wnp.sum(x, 0, dtype="int32"), numpy.sum(x, 0, dtype="int32"))
    check(wnp.mean(x, dtype=float), numpy.mean(x, dtype=numpy.float32), rtol=1e-6)
    f = data((4, 5), "float32")
    for ddof in (0, 1, 5):
        check(wnp.std(f, 0, ddof=ddof), reference(numpy.std, f, 0, ddof=ddof), rtol=1e-5)
        check(wnp.var(f, ddof=ddof), reference(numpy.var, f, ddof=ddof), rtol=1e-5)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("op", ["argmax", "argmin"])
def test_argmax_argmin_match_numpy(op: str, dt: str) -> None:
    x = data((4, 5, 6), dt)
    x[0, 0, :2] = x[0, 0, 2]  # ties: the first index wins
    for axis in (None, 0, 1, -1):
        for keepdims in (False, True):
            check(
                getattr(wnp, op)(x, axis, keepdims=keepdims),
                getattr(numpy, op)(x, axis, keepdims=keepdims),
            )
    check(getattr(wnp.asarray(x), op)(), getattr(x, op)())
    with pytest.raises(ValueError, match="empty sequence"):
        getattr(wnp, op)(numpy.zeros((2, 0)), 1)
    check(getattr(wnp, op)(numpy.zeros((0, 2)), 1), getattr(numpy, op)(numpy.zeros((0, 2)), 1))


# ---- shape manipulation


def test_reshape_is_a_view_and_infers_minus_one() -> None:
    ref = data((2, 3, 4), "float32")
    a = wnp.array(ref)
    for shape in [(6, 4), (-1,), (4, -1), (2, -1, 2), (24, 1, 1), ()][:5]:
        check(a.reshape(shape), ref.reshape(shape))
        check(wnp.reshape(a, shape), ref.reshape(shape))
    check(a.reshape(4, 6), ref.reshape(4, 6))
    check(wnp.ones(1).reshape(()), numpy.ones(1, numpy.float32).reshape(()))
    r = a.reshape(-1)
    r[0] = 100
    assert a[0, 0, 0] == 100
    f = a.flatten()
    f[1] = 100
    assert a[0, 0, 1] != 100
    a.ravel()[1] = -1
    assert a[0, 0, 1] == -1
    with pytest.raises(ValueError, match=r"cannot reshape array of size 24 into shape \(5, 5\)"):
        a.reshape(5, 5)
    with pytest.raises(ValueError, match="only specify one unknown dimension"):
        a.reshape(-1, -1)
    with pytest.raises(ValueError, match="cannot reshape"):
        a.reshape(5, -1)
    check(wnp.zeros((0, 4)).reshape(-1, 2), numpy.zeros((0, 4)).reshape(-1, 2))


@pytest.mark.parametrize("axes", [None, (0, 1, 2), (2, 0, 1), (1, 0, 2), (-1, 0, 1)])
def test_transpose(axes: tuple[int, ...] | None) -> None:
    ref = data((2, 3, 4), "int32")
    check(wnp.transpose(ref, axes), numpy.transpose(ref, axes))
    a = wnp.asarray(ref)
    check(a.transpose() if axes is None else a.transpose(*axes), ref.transpose(axes))
    check(a.transpose(axes), ref.transpose(axes))


def test_transpose_of_high_rank_and_errors() -> None:
    ref = data((2, 1, 3, 2, 2, 1, 2, 3), "float32")
    perm = (7, 0, 6, 2, 4, 3, 5, 1)
    check(wnp.transpose(ref, perm), ref.transpose(perm))
    with pytest.raises(ValueError, match="axes don't match array"):
        wnp.transpose(ref, (0, 1))
    with pytest.raises(ValueError, match="repeated axis"):
        wnp.transpose(numpy.zeros((2, 2)), (0, 0))
    with pytest.raises(wnp.AxisError):
        wnp.transpose(numpy.zeros((2, 2)), (0, 2))


def test_squeeze_and_expand_dims() -> None:
    ref = data((1, 3, 1, 2), "int64")
    for axis in (None, 0, 2, (0, 2), -2):
        check(wnp.squeeze(ref, axis), numpy.squeeze(ref, axis))
    check(wnp.asarray(ref).squeeze(), ref.squeeze())
    for axis in (0, -1, 2, (0, 1), (0, -1), (1, 3, 5)):
        check(wnp.expand_dims(ref, axis), numpy.expand_dims(ref, axis))
    with pytest.raises(ValueError, match="size not equal to one"):
        wnp.squeeze(ref, 1)
    with pytest.raises(wnp.AxisError):
        wnp.expand_dims(ref, 6)


@pytest.mark.parametrize("axis", [0, 1, -1, None])
def test_concatenate_and_stack(axis: int | None) -> None:
    a, b, c = data((2, 3), "int32"), data((2, 3), "int64"), data((2, 3), "float32")
    check(wnp.concatenate([a, b], axis), numpy.concatenate([a, b], axis))
    check(wnp.concatenate((a, b, c), axis), numpy.concatenate((a, b, c), axis))
    e = a[:0] if axis in (0, None) else a[:, :0]
    check(wnp.concatenate([a, e], axis), numpy.concatenate([a, e], axis))
    if axis is not None:
        check(wnp.stack([a, b, c], axis), numpy.stack([a, b, c], axis))
        check(
            wnp.stack([a], axis - 1 if axis < 0 else axis + 1),
            numpy.stack([a], axis - 1 if axis < 0 else axis + 1),
        )


def test_concatenate_and_stack_errors() -> None:
    with pytest.raises(
        ValueError,
        match="along dimension 1, the array at index 0 has size 3 and the array at index 1 has size 4",
    ):
        wnp.concatenate([numpy.zeros((2, 3)), numpy.zeros((2, 4))])
    with pytest.raises(ValueError, match="same number of dimensions"):
        wnp.concatenate([numpy.zeros((2, 3)), numpy.zeros(3)])
    with pytest.raises(ValueError, match="zero-dimensional"):
        wnp.concatenate([numpy.float32(1), numpy.float32(2)])
    with pytest.raises(ValueError, match="need at least one array"):
        wnp.concatenate([])
    with pytest.raises(ValueError, match="same shape"):
        wnp.stack([numpy.zeros(2), numpy.zeros(3)])
    with pytest.raises(wnp.AxisError):
        wnp.concatenate([numpy.zeros(2)], 1)


def test_broadcast_to_take_and_nonzero() -> None:
    ref = data((3, 1), "float32")
    check(wnp.broadcast_to(ref, (2, 3, 4)), numpy.broadcast_to(ref, (2, 3, 4)))
    with pytest.raises(ValueError, match="could not broadcast"):
        wnp.broadcast_to(ref, (3, 2, 2))
    x = data((4, 5), "int64")
    check(wnp.take(x, [3, 0, -1]), numpy.take(x, [3, 0, -1]))
    check(wnp.take(x, [[1], [3]], axis=1), numpy.take(x, [[1], [3]], axis=1))
    with pytest.raises(IndexError, match="index 4 is out of bounds for axis 0 with size 4"):
        wnp.take(x, [4], axis=0)
    for ours, ref_ in zip(wnp.nonzero(x), numpy.nonzero(x), strict=True):
        check(ours, ref_)
    with pytest.raises(ValueError, match="0d"):
        wnp.nonzero(wnp.float32(1))


# ---- indexing

X = numpy.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
M_ALL = X % 3 == 0
M_01 = X[:, :, 0, 0] > 20
M_1 = numpy.array([True, False, True])
M_3 = numpy.array([False, True, True, False, True])
M_3B = numpy.array([False, True, False, False, True])
M_12 = X[0, :, :, 0] % 2 == 0
KEYS = [
    0,
    -1,
    (1, 2),
    (1, -1, 3, 0),
    (-2, -3, -4, -5),
    slice(None),
    slice(1, None),
    slice(None, None, -1),
    slice(None, None, 2),
    slice(5, 10),
    (slice(None), slice(1, 3)),
    (slice(None), slice(2, 2)),
    (slice(None), slice(None, None, -2), slice(3, 0, -1)),
    (Ellipsis, 1),
    (Ellipsis, slice(None, None, -2)),
    (0, Ellipsis, 0),
    (0, 1, Ellipsis),
    (Ellipsis,),
    (),
    None,
    (None, 0),
    (slice(None), None, 1),
    (Ellipsis, None),
    (1, slice(3, 0, -1), None, slice(None, None, 3)),
    (None, Ellipsis, None, 2, None),
    True,
    False,
    (0, True),
    [1, 0],
    [-1, -1, 0],
    [[1], [0]],
    [],
    ([0, 1], [2, 0]),
    (slice(None), [2, 0, 2]),
    (Ellipsis, [4, -1]),
    (0, slice(None), [1, 2]),
    (0, [1, 2]),
    ([0, 1], slice(None), [1, 2]),
    (slice(None), [0, 2], [1, 3]),
    (slice(None), [0, 2], slice(None), [1, 3]),
    ([[0], [1]], slice(None), [[0, 1, 2]]),
    (1, [0, 2], slice(None), 3),
    (numpy.array([1, 0]), numpy.int64(2)),
    (slice(None), numpy.array([[0, 1], [2, 2]], numpy.int32)),
    (None, [1], Ellipsis, [0, 1]),
    M_ALL,
    M_01,
    (slice(None), M_1),
    (Ellipsis, M_3),
    (slice(None), M_12),
    (1, M_12),
    (slice(None), M_12, 0),
    (M_01, slice(1, 3), [0, 4, 1, 3]),
    (0, M_1, slice(None), M_3B),
    ([True, False],),
    (numpy.array(True),),
]


@pytest.mark.parametrize("key", KEYS, ids=repr)
def test_getitem_matches_numpy(key: object) -> None:
    check(wnp.asarray(X)[key], X[key])
    keyw = (
        tuple(wnp.asarray(k) if isinstance(k, numpy.ndarray) and k.ndim else k for k in key)
        if isinstance(key, tuple)
        else key
    )
    check(wnp.asarray(X.astype(numpy.float32))[keyw], X.astype(numpy.float32)[key])


@pytest.mark.parametrize("key", KEYS, ids=repr)
def test_setitem_matches_numpy(key: object) -> None:
    for value in (-7, "array", "row"):
        ref = X.copy()
        target = ref[key]
        if value == "array":
            value = -numpy.arange(target.size).reshape(target.shape)
        elif value == "row":
            value = -numpy.arange(target.shape[-1]) if target.ndim else -3
        ours = wnp.array(X)
        ref[key] = value
        ours[key] = value
        check(ours, ref)


@settings(max_examples=300, deadline=None)
@given(data_=st.data())
def test_indexing_matches_numpy_on_random_keys(data_: st.DataObject) -> None:
    shape = data_.draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5))
    key = data_.draw(
        hnp.basic_indices(shape, min_dims=0, allow_newaxis=True)
        | (hnp.integer_array_indices(shape) if shape and 0 not in shape else st.nothing())
    )
    ref = numpy.arange(math.prod(shape), dtype=numpy.int32).reshape(shape)
    ours = wnp.array(ref)
    check(ours[key], ref[key])
    value = -numpy.arange(ref[key].size, dtype=numpy.int32).reshape(ref[key].shape) - 1
    ref[key] = value
    ours[key] = value
    check(ours, ref)


def test_setitem_converts_values_to_the_array_dtype() -> None:
    a = wnp.zeros(4, "int32")
    a[0] = 2.7
    a[1:3] = numpy.array([1.9, -1.9])
    a[3] = True
    check(a, numpy.array([2, 1, -1, 1], numpy.int32))
    f = wnp.zeros(3)
    f[:] = numpy.array([1, 2, 3], numpy.int64)
    f[wnp.asarray([True, False, True])] = 0.5
    check(f, numpy.array([0.5, 2, 0.5], numpy.float32))
    f[...] = wnp.array([[9.0, 8.0, 7.0]])  # leading unit dims are dropped, as in numpy
    check(f, numpy.array([9, 8, 7], numpy.float32))
    with pytest.raises(ValueError, match="cannot convert float NaN to integer"):
        a[0] = math.nan
    with pytest.raises(OverflowError):
        a[0] = 2**40
    with pytest.raises(OverflowError):
        a[:2] = [1, 2**40]


def test_setitem_with_repeated_indices_keeps_the_last_write() -> None:
    ref, ours = numpy.zeros(5, numpy.int64), wnp.zeros(5, int)
    ref[[1, 1, 3, -2]] = [1, 2, 3, 4]
    ours[[1, 1, 3, -2]] = [1, 2, 3, 4]
    check(ours, ref)


def test_setitem_handles_overlapping_source_and_destination() -> None:
    ref = numpy.arange(10)
    a = wnp.asarray(ref).copy()
    ref[1:] = ref[:-1].copy()
    a[1:] = a[:-1]
    check(a, ref)
    a[::-1] = a
    check(a, ref[::-1])
    a[[0, 1]] = a[[1, 0]]
    ref[::-1][[0, 1]] = ref[::-1][[1, 0]]


def test_basic_indexing_views_contiguous_selections_and_copies_others() -> None:
    a = wnp.zeros((3, 4))
    row = a[1]
    row[:] = 5
    a[2][1:3] = 7
    block = a[0:2]
    block += 1
    col = a[:, 0]
    col[:] = -1  # a copy: a[:, 0] is strided
    expected = numpy.zeros((3, 4), numpy.float32)
    expected[1] = 5
    expected[2, 1:3] = 7
    expected[0:2] += 1
    check(a, expected)
    assert a[1].tensor.offset_in(a.tensor) == 16 and a[1].tensor.shares_storage(a.tensor)
    a[:, 0] += 10
    expected[:, 0] += 10
    check(a, expected)


def test_index_errors_read_like_numpy() -> None:
    a = wnp.asarray(X)
    with pytest.raises(IndexError, match="index 2 is out of bounds for axis 0 with size 2"):
        a[2]
    with pytest.raises(IndexError, match="index -6 is out of bounds for axis 3 with size 5"):
        a[0, 0, 0, -6]
    with pytest.raises(
        IndexError, match="too many indices for array: array is 4-dimensional, but 5 were indexed"
    ):
        a[0, 0, 0, 0, 0]
    with pytest.raises(IndexError, match="single ellipsis"):
        a[..., 0, ...]
    with pytest.raises(IndexError, match="index 3 is out of bounds for axis 1 with size 3"):
        a[:, [0, 3]]
    with pytest.raises(IndexError, match="out of bounds"):
        a[[0, 1], [0, 3]]
    with pytest.raises(
        IndexError,
        match="boolean index did not match indexed array along axis 1; size of axis is 3 but size of corresponding boolean axis is 2",
    ):
        a[:, numpy.array([True, False])]
    with pytest.raises(IndexError, match="only integers, slices"):
        a[1.5]
    with pytest.raises(IndexError, match="integer \\(or boolean\\) type"):
        a[wnp.asarray([0.5])]
    with pytest.raises(IndexError, match=r"shape mismatch: .* with shapes \(2,\) \(3,\)"):
        a[[0, 1], [0, 1, 2]]
    with pytest.raises(IndexError, match=r"with shapes \(4,\) \(4,\) \(2,\)"):
        a[M_01, 1:3, [0, 4]]
    with pytest.raises(
        IndexError, match="size of axis is 2 but size of corresponding boolean axis is 3"
    ):
        a[[True, False, True]]
    with pytest.raises(IndexError, match="out of bounds"):
        a[5] = 1
    with pytest.raises(
        ValueError, match=r"could not broadcast input array from shape \(3,\) into shape \(2,\)"
    ):
        wnp.zeros(2)[:] = [1, 2, 3]
    with pytest.raises(ValueError, match="could not broadcast"):
        wnp.zeros(4)[[0, 1]] = [1, 2, 3]


def test_iteration_yields_rows() -> None:
    ref = data((3, 2), "float32")
    rows = list(wnp.asarray(ref))
    assert len(rows) == 3
    for ours, r in zip(rows, ref, strict=True):
        check(ours, r)


# ---- sorting


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("axis", [-1, 0, 1, None])
def test_sort_and_argsort_are_stable_like_numpy_stable(dt: str, axis: int | None) -> None:
    x = data((4, 6, 3), dt)
    if dt == "float32":
        x = numpy.round(x)  # ties
        x[1, 2, 0] = x[3, 0, 1] = numpy.nan
    check(wnp.sort(x, axis), numpy.sort(x, axis, kind="stable"))
    check(wnp.argsort(x, axis), numpy.argsort(x, axis, kind="stable"))
    check(wnp.asarray(x).argsort(axis), x.argsort(axis, kind="stable"))
    s = wnp.array(x)
    s.sort(0)
    check(s, numpy.sort(x, 0, kind="stable"))


@pytest.mark.parametrize("largest", [True, False])
@pytest.mark.parametrize("dt", DTYPES[:3])
def test_topk_returns_the_k_best_sorted_with_indices(dt: str, largest: bool) -> None:
    x = data((5, 7), dt)
    for axis in (-1, 0):
        for k in (0, 1, 3, x.shape[axis]):
            order = numpy.argsort(-x if largest else x, axis, kind="stable")
            idx = numpy.take(order, numpy.arange(k), axis)
            values, indices = wnp.topk(x, k, axis, largest=largest)
            check(indices, idx)
            check(values, numpy.take_along_axis(x, idx, axis))
    with pytest.raises(ValueError, match="out of range"):
        wnp.topk(x, 8)
    with pytest.raises(ValueError, match="non-negative"):
        wnp.topk(x, -1)


def test_topk_counts_nan_as_largest() -> None:
    values, indices = wnp.topk([1.0, math.nan, 3.0, 2.0], 2)
    assert math.isnan(values[0]) and values[1] == 3 and indices.tolist() == [1, 2]
    values, _ = wnp.topk([1.0, math.nan, 3.0], 2, largest=False)
    assert values.tolist() == [1, 3]


# ---- linear algebra


@pytest.mark.parametrize(
    ("sa", "sb"),
    [
        ((3,), (3,)),
        ((3,), (3, 4)),
        ((2, 3), (3,)),
        ((2, 3), (3, 4)),
        ((5, 2, 3), (3, 4)),
        ((5, 1, 2, 3), (4, 3, 2)),
        ((2, 0), (0, 3)),
        ((0, 3), (3, 2)),
        ((2, 3, 4), (4,)),
    ],
)
@pytest.mark.parametrize(
    "pair",
    [
        ("float32", "float32"),
        ("int32", "int32"),
        ("int64", "float32"),
        ("bool", "bool"),
        ("int32", "int64"),
    ],
    ids="-".join,
)
def test_matmul_and_dot_match_numpy(
    sa: tuple[int, ...], sb: tuple[int, ...], pair: tuple[str, str]
) -> None:
    a, b = data(sa, pair[0]), data(sb, pair[1])
    check(wnp.matmul(a, b), numpy.matmul(a, b), rtol=1e-5, atol=1e-5)
    if len(sb) <= 2 or len(sa) <= 2:
        check(wnp.dot(a, b), numpy.dot(a, b), rtol=1e-5, atol=1e-5)


def test_dot_of_scalars_and_nd_arrays() -> None:
    a, b = data((2, 3, 4), "float32"), data((5, 4, 2), "float32")
    check(wnp.dot(a, b), numpy.dot(a, b), rtol=1e-5, atol=1e-5)
    check(wnp.dot(a, 2.0), numpy.dot(a, numpy.float32(2)))
    check(wnp.asarray(a[0]).dot(b[0]), a[0].dot(b[0]), rtol=1e-5, atol=1e-5)


def test_matmul_errors() -> None:
    with pytest.raises(
        ValueError, match=r"mismatch in its core dimension 0.*\(size 4 is different from 3\)"
    ):
        wnp.matmul(wnp.zeros((2, 3)), wnp.zeros((4, 2)))
    with pytest.raises(ValueError, match="does not have enough dimensions"):
        wnp.matmul(wnp.zeros(3), 2.0)
    with pytest.raises(ValueError, match="could not be broadcast"):
        wnp.matmul(wnp.zeros((2, 2, 3)), wnp.zeros((3, 3, 2)))
    with pytest.raises(ValueError, match="not aligned"):
        wnp.dot(wnp.zeros((2, 3)), wnp.zeros((2, 3)))


# ---- whole-array comparisons


def test_allclose_isclose_and_array_equal() -> None:
    x = numpy.array([1.0, 2.0, numpy.inf, numpy.nan, 0.0], numpy.float32)
    y = numpy.array([1.0 + 1e-6, 2.1, numpy.inf, numpy.nan, 1e-9], numpy.float32)
    for equal_nan in (False, True):
        check(wnp.isclose(x, y, equal_nan=equal_nan), numpy.isclose(x, y, equal_nan=equal_nan))
        assert wnp.allclose(x[[0, 2, 4]], y[[0, 2, 4]]) is True
        assert wnp.allclose(x, y, equal_nan=equal_nan) is False
        assert wnp.array_equal(x, x, equal_nan=equal_nan) is equal_nan
    assert wnp.allclose(x[[0, 3]], y[[0, 3]], equal_nan=True)
    assert wnp.allclose([1, 2], [1, 2.5], atol=0.6)
    assert wnp.array_equal([1, 2], numpy.array([1, 2], numpy.int32))
    assert not wnp.array_equal([1, 2], [1, 2, 3])
    assert not wnp.array_equal([1, 2], [1, 3])


# ---- printing

PRINTED = [
    numpy.arange(12).reshape(3, 4),
    numpy.arange(5, dtype=numpy.int32),
    numpy.array([1.5, 2.25, 3], numpy.float32),
    numpy.array([0.1, 0.2, -0.3], numpy.float32),
    numpy.arange(12, dtype=numpy.float32).reshape(3, 4) / 3,
    numpy.array([1e10, 1.5], numpy.float32),
    numpy.array([1e-5, 1], numpy.float32),
    numpy.array([123456789.0, 1], numpy.float32),
    numpy.array([numpy.nan, 1.5, -numpy.inf], numpy.float32),
    numpy.array([numpy.nan, numpy.inf], numpy.float32),
    numpy.array([-0.0, 1], numpy.float32),
    numpy.array([0.5, 100.25, -3], numpy.float32),
    numpy.array([True, False]),
    numpy.array([[True], [True]]),
    numpy.array(3.5, numpy.float32),
    numpy.array(7),
    numpy.array(False),
    numpy.array(1e20, numpy.float32),
    numpy.zeros((0,), numpy.float32),
    numpy.zeros((2, 0), numpy.int64),
    numpy.zeros((0,), bool),
    numpy.arange(30, dtype=numpy.float32),
    numpy.arange(40).reshape(2, 4, 5),
    numpy.arange(1001),
    numpy.arange(2000, dtype=numpy.float32).reshape(40, 50),
    numpy.arange(3000, dtype=numpy.int32).reshape(10, 10, 30) - 1500,
]


@pytest.mark.parametrize("ref", PRINTED, ids=lambda a: f"{a.dtype}{a.shape}")
def test_repr_and_str_look_like_numpy(ref: numpy.ndarray) -> None:
    a = wnp.asarray(ref)
    assert repr(a) == repr(ref)
    assert str(a) == str(ref)


# ---- sub-interpreters


def test_it_works_in_isolated_subinterpreters_without_numpy(tmp_path: Path) -> None:
    # Two interpreters compute at once (each has its own GIL) where numpy cannot be
    # imported, and hand back plain data; the host checks it against numpy. In a fresh
    # process, because a sub-interpreter that fails badly can abort its host.
    guest = textwrap.dedent(
        """
        import json, sys
        try:
            import numpy
            numpy_ok = True
        except ImportError:
            numpy_ok = False
        from walle_engine import np
        for _ in range(20):
            x = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7
            y = np.where(x > 1, np.exp(-x), x ** 2)
            y[:, 1] += np.array([1.0, 2.0, 3.0, 4.0])
            values, indices = np.topk(y.reshape(6, 4), 2)
        out = {
            "numpy_ok": numpy_ok,
            "numpy_loaded": hasattr(sys.modules.get("numpy"), "ndarray"),
            "y": y.tolist(),
            "mean": float(y.mean()),
            "argsort": np.argsort(y[0, 0]).tolist(),
            "topk": [values.tolist(), indices.tolist()],
            "masked": y[y > 1].tolist(),
            "matmul": (y[0] @ y[1].T).tolist(),
            "repr": repr(np.arange(3)),
        }
        with open(OUT, "w") as f:
            json.dump(out, f)
        """
    )
    host = textwrap.dedent(
        """
        import _interpreters, sys, threading
        errors = []
        def run(path):
            iid = _interpreters.create("isolated")
            try:
                err = _interpreters.exec(iid, f"OUT = {path!r}\\n" + sys.argv[1])
                if err is not None:
                    errors.append(err.formatted)
            finally:
                _interpreters.destroy(iid)
        threads = [threading.Thread(target=run, args=(p,)) for p in sys.argv[2:]]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        """
    )
    paths = [str(tmp_path / f"guest{i}.json") for i in range(2)]
    out = subprocess.run(
        [sys.executable, "-c", host, guest, *paths], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    x = numpy.arange(24, dtype=numpy.float32).reshape(2, 3, 4) / 7
    y = numpy.where(x > 1, numpy.exp(-x), x**2)
    y[:, 1] += numpy.array([1.0, 2.0, 3.0, 4.0], numpy.float32)
    idx = numpy.argsort(-y.reshape(6, 4), 1, kind="stable")[:, :2]
    for path in paths:
        got = json.loads(Path(path).read_text())
        assert not got["numpy_ok"] and not got["numpy_loaded"]
        assert_allclose(got["y"], y, rtol=1e-6)
        assert got["mean"] == pytest.approx(float(y.mean()), rel=1e-6)
        assert got["argsort"] == numpy.argsort(y[0, 0], kind="stable").tolist()
        assert got["topk"][1] == idx.tolist()
        assert_allclose(got["topk"][0], numpy.take_along_axis(y.reshape(6, 4), idx, 1), rtol=1e-6)
        assert_allclose(got["masked"], y[y > 1], rtol=1e-6)
        assert_allclose(got["matmul"], y[0] @ y[1].T, rtol=1e-5)
        assert got["repr"] == "array([0, 1, 2])"
