"""Every optimised kernel, at every SIMD level this CPU has, against the scalar oracle."""

from __future__ import annotations

import numpy as np
import pytest
import walle_engine
from hypothesis import given, settings
from hypothesis import strategies as st
from walle_engine import ops

LEVELS = walle_engine.supported_isas()
UNARY = [
    "abs",
    "neg",
    "exp",
    "log",
    "sqrt",
    "rsqrt",
    "reciprocal",
    "sigmoid",
    "tanh",
    "erf",
    "relu",
    "floor",
    "ceil",
    "round",
    "sin",
    "cos",
    "sign",
    "softplus",
]
BINARY = ["add", "sub", "mul", "div", "pow", "max", "min"]
COMPARE = ["eq", "lt", "gt", "le", "ge"]
RNG = np.random.default_rng(0)


@pytest.fixture(params=LEVELS)
def level(request: pytest.FixtureRequest):
    before = walle_engine.isa()
    walle_engine.set_isa(request.param)
    yield request.param
    walle_engine.set_isa(before)


def both(fn, *args, **kw):
    return np.asarray(fn(*args, **kw)), np.asarray(fn(*args, reference=True, **kw))


def unary_input(op: str, n: int) -> np.ndarray:
    x = (RNG.standard_normal(n) * 4).astype(np.float32)
    if op in ("log", "sqrt", "rsqrt"):
        x = np.abs(x) + np.float32(1e-3)
    if op == "round":
        x[:8] = [0.5, 1.5, 2.5, -0.5, -1.5, 3.49, -2.5, 7.0]  # ties round to even
    return x


@pytest.mark.parametrize("op", UNARY)
def test_unary_kernels_match_the_oracle(op: str, level: str) -> None:
    x = unary_input(op, 1037)  # odd length: vector tails
    got, ref = both(ops.unary, op, x)
    np.testing.assert_allclose(got, ref, rtol=2e-6, atol=2e-7)


def test_parametric_unary_kernels_match_the_oracle(level: str) -> None:
    x = unary_input("abs", 333)
    for op, a, b in [("affine", 0.5, -1.0), ("clip", -0.5, 2.0)]:
        got, ref = both(ops.unary, op, x, a, b)
        np.testing.assert_allclose(got, ref, rtol=1e-6)


def test_transcendentals_handle_edges(level: str) -> None:
    x = np.array([0.0, -0.0, 1e-30, -1e-30, 88.0, 89.0, -87.0, -104.0, np.inf, -np.inf], np.float32)
    with np.errstate(all="ignore"):
        for op in ("exp", "sigmoid", "tanh", "erf"):
            got, ref = both(ops.unary, op, x)
            np.testing.assert_allclose(got, ref, rtol=2e-6, atol=1e-37, err_msg=op)
        got, ref = both(ops.unary, "log", np.array([0.0, 1.0, np.inf, -1.0, np.nan], np.float32))
        np.testing.assert_array_equal(got, ref)


SHAPES = [
    ((7, 5), (7, 5)),
    ((2, 3, 17), (17,)),
    ((4, 1, 33), (1, 6, 1)),
    ((1,), (3, 4)),
    ((), (5,)),
    ((2, 64, 9, 9), (1, 64, 1, 1)),
]


@pytest.mark.parametrize(("sa", "sb"), SHAPES)
@pytest.mark.parametrize("op", BINARY + COMPARE)
def test_binary_kernels_broadcast_like_the_oracle(
    op: str, sa: tuple, sb: tuple, level: str
) -> None:
    a = RNG.standard_normal(sa).astype(np.float32)
    b = RNG.standard_normal(sb).astype(np.float32)
    if op == "pow":
        a = np.abs(a) + np.float32(0.1)
    got, ref = both(ops.binary, op, a, b)
    np.testing.assert_allclose(got, ref, rtol=2e-6, atol=1e-6)
    if op not in COMPARE:
        with np.errstate(all="ignore"):
            np.testing.assert_allclose(
                got,
                getattr(
                    np,
                    {
                        "add": "add",
                        "sub": "subtract",
                        "mul": "multiply",
                        "div": "divide",
                        "pow": "power",
                        "max": "maximum",
                        "min": "minimum",
                    }[op],
                )(a, b),
                rtol=2e-6,
                atol=1e-6,
            )


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "max", "min", "mod", "eq", "lt"])
def test_integer_binary_ops_match_the_oracle(op: str, dtype: type) -> None:
    a = RNG.integers(-50, 50, (3, 8)).astype(dtype)
    b = RNG.integers(1, 9, (8,)).astype(dtype) * np.where(RNG.random(8) < 0.5, -1, 1).astype(dtype)
    got, ref = both(ops.binary, op, a, b)
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("op", ["and", "or", "xor"])
def test_logical_ops_match_the_oracle(op: str) -> None:
    a, b = RNG.random((4, 5)) < 0.5, RNG.random((5,)) < 0.5
    got, ref = both(ops.binary, op, a, b)
    np.testing.assert_array_equal(got, ref)


def test_select_and_cast_match_the_oracle(level: str) -> None:
    c = RNG.random((3, 1, 9)) < 0.5
    a = RNG.standard_normal((3, 4, 9)).astype(np.float32)
    b = RNG.standard_normal((9,)).astype(np.float32)
    got, ref = both(ops.select, c, a, b)
    np.testing.assert_array_equal(got, ref)
    x = (RNG.standard_normal(50) * 10).astype(np.float32)
    for dt in ("int32", "int64", "bool", "float32"):
        got, ref = both(ops.cast, x, dt)
        np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("op", ["sum", "mean", "max", "min", "prod"])
@pytest.mark.parametrize("axes", [[0], [1], [2], [-1], [0, 2], [1, 2], [0, 1, 2]])
def test_reductions_match_the_oracle(op: str, axes: list[int], level: str) -> None:
    x = (RNG.standard_normal((5, 37, 19)) * (0.3 if op == "prod" else 1)).astype(np.float32)
    if op == "prod":
        x = np.float32(1) + x * np.float32(0.1)
    for keep in (True, False):
        got, ref = both(ops.reduce, op, x, axes, keep)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_argmax_matches_the_oracle() -> None:
    x = RNG.integers(0, 4, (6, 7, 5)).astype(np.float32)  # ties
    for axis in (0, 1, -1):
        for last in (False, True):
            got, ref = both(ops.argmax, x, axis, True, last)
            np.testing.assert_array_equal(got, ref)


@given(
    m=st.integers(1, 70),
    n=st.integers(1, 90),
    k=st.integers(0, 300),
    ta=st.booleans(),
    tb=st.booleans(),
    batch=st.sampled_from([(), (2,), (3, 1)]),
)
@settings(max_examples=40, deadline=None)
def test_matmul_kernels_match_the_oracle(
    m: int, n: int, k: int, ta: bool, tb: bool, batch: tuple
) -> None:
    rng = np.random.default_rng(m * 1000 + n)
    a = rng.standard_normal((*batch, k, m) if ta else (*batch, m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
    ref = np.asarray(ops.matmul(a, b, ta, tb, reference=True))
    before = walle_engine.isa()
    try:
        for lvl in LEVELS:
            walle_engine.set_isa(lvl)
            for variant in range(2 * len(walle_engine._core.gemm_kernels(lvl))):  # packed, direct B
                got = np.asarray(ops.matmul(a, b, ta, tb, variant))
                np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * max(1, k) ** 0.5)
    finally:
        walle_engine.set_isa(before)


def test_raster_expresses_transpose_slice_and_pad(level: str) -> None:
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    # transpose (0, 2, 1)
    t = ((0, 0, 0, (2, 4, 3), (12, 1, 4), (12, 3, 1)),)
    got, ref = both(ops.raster, [x], t, (2, 4, 3))
    np.testing.assert_array_equal(got, x.transpose(0, 2, 1))
    np.testing.assert_array_equal(ref, got)
    # slice x[:, 1:, ::2] padded by one on every side of the last two dims with -1
    pad = ((0, 1 * 4, 1 * 4 + 1, (2, 2, 2), (12, 4, 2), (16, 4, 1)),)
    got, ref = both(ops.raster, [x], pad, (2, 4, 4), fill=-1.0)
    expect = np.pad(x[:, 1:, ::2], ((0, 0), (1, 1), (1, 1)), constant_values=-1)
    np.testing.assert_array_equal(got, expect)
    np.testing.assert_array_equal(ref, expect)


def test_raster_concat_of_two_inputs_and_int64() -> None:
    a = np.arange(6, dtype=np.int64).reshape(2, 3)
    b = np.arange(4, dtype=np.int64).reshape(2, 2) + 100
    regs = [(0, 0, 0, (2, 3), (3, 1), (5, 1)), (1, 0, 3, (2, 2), (2, 1), (5, 1))]
    got, ref = both(ops.raster, [a, b], regs, (2, 5))
    np.testing.assert_array_equal(got, np.concatenate([a, b], axis=1))
    np.testing.assert_array_equal(ref, got)


def test_raster_rejects_out_of_bounds_regions() -> None:
    x = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match="out of bounds"):
        ops.raster([x], [(0, 2, 0, (4,), (1,), (1,))], (4,))


@pytest.mark.parametrize(
    ("perm1", "perm2"),
    [((0, 2, 1, 3), (0, 2, 1, 3)), ((1, 0, 2, 3), (0, 1, 3, 2)), ((0, 2, 3, 1), (2, 0, 1, 3))],
)
def test_chained_transposes_merge_into_one_raster(perm1: tuple, perm2: tuple) -> None:
    x = RNG.standard_normal((2, 3, 4, 5)).astype(np.float32)

    def region(shape: tuple, perm: tuple) -> tuple:
        strides = np.cumprod((1, *shape[::-1]))[:-1][::-1]
        out = tuple(shape[p] for p in perm)
        dst = np.cumprod((1, *out[::-1]))[:-1][::-1]
        return (0, 0, 0, out, tuple(int(strides[p]) for p in perm), tuple(int(d) for d in dst))

    r1 = region(x.shape, perm1)
    mid = x.transpose(perm1)
    r2 = region(mid.shape, perm2)
    merged = ops.compose_raster([r1], mid.shape, [r2])
    assert merged is not None
    got = np.asarray(ops.raster([x], merged, mid.transpose(perm2).shape))
    np.testing.assert_array_equal(got, mid.transpose(perm2))


def test_a_slice_of_a_transpose_merges_and_a_misaligned_read_does_not() -> None:
    x = RNG.standard_normal((6, 8)).astype(np.float32)
    t = (0, 0, 0, (8, 6), (1, 8), (6, 1))  # transpose -> [8, 6]
    s = (0, 2 * 6 + 1, 0, (3, 4), (6, 1), (4, 1))  # [2:5, 1:5] of the transpose
    merged = ops.compose_raster([t], (8, 6), [s])
    assert merged is not None
    np.testing.assert_array_equal(np.asarray(ops.raster([x], merged, (3, 4))), x.T[2:5, 1:5])
    flat = (0, 1, 0, (7,), (7,), (1,))  # strides that straddle rows of the transpose
    assert ops.compose_raster([t], (8, 6), [flat]) is None


def test_tensors_share_memory_with_numpy() -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    t = ops.tensor(x)
    assert np.asarray(t).ctypes.data == x.ctypes.data
    back = np.asarray(t)
    assert back.ctypes.data == x.ctypes.data
    back[0, 0] = 42
    assert x[0, 0] == 42
    for dt in (np.int32, np.int64, np.bool_):
        y = np.zeros((2, 2), dt)
        assert np.asarray(ops.tensor(y)).dtype == dt


def test_non_contiguous_buffers_are_refused_with_a_hint() -> None:
    x = np.zeros((4, 4), np.float32)[:, ::2]
    with pytest.raises(ValueError, match="ascontiguousarray"):
        ops.tensor(x)


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
@pytest.mark.parametrize("reference", [False, True])
def test_integer_division_edge_cases_do_not_kill_the_process(dtype: type, reference: bool) -> None:
    # MIN / -1 and MIN % -1 trap in hardware (SIGFPE); a task reaching them through
    # walle_engine.ops must get numpy's wrapped result, not take the device process down.
    lo = np.iinfo(dtype).min
    a = np.array([lo, lo, 7, -7, 5], dtype)
    b = np.array([-1, 1, -1, 2, 0], dtype)
    div = np.asarray(ops.binary("div", a, b, reference=reference))
    mod = np.asarray(ops.binary("mod", a, b, reference=reference))
    assert div.tolist() == [lo, lo, -7, -3, 0]  # C division truncates; x / 0 is 0
    assert mod.tolist() == [0, 0, 0, 1, 0]  # Python's sign rule; x % 0 is 0


@pytest.mark.parametrize("reference", [False, True])
def test_nan_propagates_like_numpy(reference: bool) -> None:
    nan = np.float32("nan")
    a = np.array([nan, 1, nan, -2, 0], np.float32)
    b = np.array([1, nan, nan, 3, -0.0], np.float32)
    for op, ref in (("max", np.maximum), ("min", np.minimum)):
        got = np.asarray(ops.binary(op, a, b, reference=reference))
        np.testing.assert_array_equal(got, ref(a, b))
    x = np.array([[1, nan, 3], [4, 5, 6], [nan, 0, -1]], np.float32)
    for op, ref in (("max", np.max), ("min", np.min)):
        for axis in (0, 1):  # reducing the last axis and a strided one
            got = np.asarray(ops.reduce(op, x, [axis], keepdims=False, reference=reference))
            np.testing.assert_array_equal(got, ref(x, axis=axis))
    v = np.array([nan, -3, 0, 2], np.float32)
    np.testing.assert_array_equal(
        np.asarray(ops.unary("clip", v, -1.0, 1.0, reference=reference)), np.clip(v, -1, 1)
    )
    np.testing.assert_array_equal(np.asarray(ops.unary("sign", v, reference=reference)), np.sign(v))


def _numpy_unary(op: str, x: np.ndarray) -> np.ndarray:
    """numpy's answer in float64, rounded to float32 (the oracle's precision)."""
    import math

    x64 = x.astype(np.float64)
    with np.errstate(all="ignore"):
        y = {
            "exp": np.exp,
            "tanh": np.tanh,
            "sigmoid": lambda v: 1.0 / (1.0 + np.exp(-v)),
            "relu": lambda v: np.maximum(v, 0.0),
            "softplus": lambda v: np.logaddexp(0.0, v),
            "erf": np.vectorize(math.erf, otypes=[np.float64]),
        }[op](x64)
        return y.astype(np.float32)


@pytest.mark.parametrize("reference", [False, True])
@pytest.mark.parametrize("op", ["exp", "tanh", "sigmoid", "relu", "softplus", "erf"])
def test_unary_kernels_keep_nan_and_match_the_oracle_at_infinities(
    op: str, reference: bool, level: str
) -> None:
    # A NaN must come out NaN from the vector body and from the scalar tail alike (the
    # clamps inside exp/tanh used to turn it into a finite number, relu into 0), and the
    # infinities, huge, tiny and subnormal inputs must give numpy's float64 answer.
    edges = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30, -1e-30, 1e-40, -1e-40, 3e38, -3e38]
    edges += [88.0, 88.7, 89.0, -87.0, -87.5, -104.0, 9.0, -9.0, 9.5, -9.5, 20.0, -20.0]
    edges += [50.0, -50.0, 100.0, -100.0, 0.3, -0.6, 0.7, 1.7, -5.5, 15.0, -15.0, 1e-4, -1e-4]
    body = (RNG.standard_normal(1000) * 30).astype(np.float32)
    body[RNG.choice(1000, 40, replace=False)] = np.nan
    for x in (np.array(edges, np.float32), body, np.array([np.nan], np.float32), body[:13]):
        got = np.asarray(ops.unary(op, x, reference=reference))
        want = _numpy_unary(op, x)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(x), err_msg=op)
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-37, err_msg=op)
    if op == "tanh":  # saturates to exactly +-1 (from |x| = 9 in the fast kernels)
        big = np.array([10.0, -10.0, 12.5, -12.0, 3e38, -np.inf], np.float32)
        if not reference:
            big = np.concatenate([big, np.array([9.0, -9.0, 9.001], np.float32)])
        got = np.asarray(ops.unary(op, big, reference=reference))
        np.testing.assert_array_equal(got, np.sign(big))
    if op == "softplus":  # tiny results keep their relative accuracy, large ones no overflow
        x = np.array([-16.0, -30.0, -60.0, -80.0, 30.0, 1e4, 1e30], np.float32)
        got = np.asarray(ops.unary(op, x, reference=reference))
        np.testing.assert_allclose(got, _numpy_unary(op, x), rtol=1e-6)
