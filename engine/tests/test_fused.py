"""Fused row kernels (softmax, layernorm, erf-GELU) at every SIMD level against their
double-precision oracles and numpy, and the converter's fusions in real models against
onnxruntime (which runs the unfused graphs)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import walle_engine
from model_zoo import GraphBuilder
from onnx import TensorProto, helper
from walle_engine import _core

LEVELS = walle_engine.supported_isas()
RNG = np.random.default_rng(15)
# Row lengths around the vector widths (8 lanes on AVX2, 16 on AVX-512) and the tails, plus
# real attention widths.
LENGTHS = [1, 3, 7, 8, 9, 15, 16, 17, 31, 33, 128, 131, 384]


@pytest.fixture(params=LEVELS)
def level(request: pytest.FixtureRequest):
    before = walle_engine.isa()
    walle_engine.set_isa(request.param)
    yield request.param
    walle_engine.set_isa(before)


def rows_with_specials(rows: int, n: int, spread: float = 4.0) -> np.ndarray:
    """Random rows; row 1 holds a NaN, row 2 +inf, row 3 -inf, row 4 only -inf, row 5
    huge values (the non-finite ones at the last index, i.e. in the scalar tail)."""
    x = (RNG.standard_normal((rows, n)) * spread).astype(np.float32)
    x[1, RNG.integers(n)] = np.nan
    x[2, n - 1] = np.inf
    x[3, n // 2] = -np.inf
    x[4, :] = -np.inf
    x[5, :] *= np.float32(1e30)
    return x


def t(x: np.ndarray) -> _core.Tensor:
    return _core.Tensor(np.ascontiguousarray(x))


def check_rows(got: np.ndarray, want: np.ndarray, rtol: float, atol_rel: float) -> None:
    """Same NaN pattern; elsewhere within rtol, or atol_rel of the row's largest value."""
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    with np.errstate(invalid="ignore"):
        scale = np.nanmax(np.where(np.isfinite(want), np.abs(want), 0), axis=-1, keepdims=True)
        ok = np.isnan(want) | (got == want)
        err = np.abs(got.astype(np.float64) - want)
        ok |= err <= rtol * np.abs(want) + atol_rel * scale
    assert ok.all(), f"max err {np.nanmax(np.where(ok, 0, err))} at {np.argwhere(~ok)[:5]}"


def softmax64(x: np.ndarray, scale: float, log: bool) -> np.ndarray:
    x64 = x.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        m = np.max(x64, axis=-1, keepdims=True)  # NaN if the row has one, like numpy
        d = (x64 - m) * scale
        s = np.sum(np.exp(d), axis=-1, keepdims=True)
        return d - np.log(s) if log else np.exp(d) / s


@pytest.mark.parametrize("n", [8, 16, 128])
def test_softmax_rows_read_rows_at_any_float_address(n: int, level: str) -> None:
    """The kernels load whole vectors from wherever a row starts: a buffer one float past
    an aligned address gives the same result as an aligned copy."""
    rows = 6
    base = np.empty(rows * n + 1, np.float32)
    shifted = base[1:].reshape(rows, n)  # 4 bytes past the allocation's alignment
    shifted[...] = rows_with_specials(rows, n)
    aligned = np.array(shifted)
    for log in (False, True):
        got = np.asarray(_core.softmax_rows(_core.Tensor(shifted), 0.5, log, False))
        want = np.asarray(_core.softmax_rows(t(aligned), 0.5, log, False))
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("n", LENGTHS)
def test_softmax_rows_match_the_oracle_and_numpy(n: int, level: str) -> None:
    x = rows_with_specials(7, n) if n > 1 else RNG.standard_normal((7, 1)).astype(np.float32)
    for scale, log in [(1.0, False), (0.125, False), (3.0, False), (1.0, True), (0.5, True)]:
        got = np.asarray(_core.softmax_rows(t(x), scale, log, False))
        ref = np.asarray(_core.softmax_rows(t(x), scale, log, True))
        check_rows(got, ref, 2e-6, 2e-6 if log else 1e-7)
        check_rows(ref, softmax64(x, scale, log).astype(np.float32), 1e-6, 1e-7)
        if not log:
            finite = np.isfinite(ref).all(axis=-1)
            np.testing.assert_allclose(got[finite].sum(axis=-1), 1.0, rtol=2e-6)


@pytest.mark.parametrize("n", LENGTHS)
def test_layernorm_rows_match_the_oracle_and_numpy(n: int, level: str) -> None:
    x = rows_with_specials(7, n) + np.float32(3)  # an offset mean: the two-pass variance
    gamma = RNG.standard_normal(n).astype(np.float32)
    beta = RNG.standard_normal(n).astype(np.float32)
    x64 = x.astype(np.float64)
    with np.errstate(invalid="ignore"):
        mean = x64.mean(axis=-1, keepdims=True)
        norm = (x64 - mean) / np.sqrt(((x64 - mean) ** 2).mean(axis=-1, keepdims=True) + 1e-5)
    for g, b in [(gamma, beta), (gamma, None), (None, beta), (None, None)]:
        args = (None if g is None else t(g), None if b is None else t(b), 1e-5)
        got = np.asarray(_core.layernorm_rows(t(x), *args, False))
        ref = np.asarray(_core.layernorm_rows(t(x), *args, True))
        want = norm * (1.0 if g is None else g) + (0.0 if b is None else b)
        check_rows(got, ref, 1e-5, 2e-6)
        check_rows(ref, want.astype(np.float32), 1e-6, 1e-7)


def gelu64(x: np.ndarray) -> np.ndarray:
    return np.array([0.5 * v * math.erfc(-v / math.sqrt(2)) for v in x.astype(np.float64)])


def test_gelu_kernel_is_accurate_to_1e6_relative_everywhere(level: str) -> None:
    # Dense over the range where GELU is not 0 or x, log-spaced near 0 and in the far
    # negative tail where x/2 (1 + erf) would cancel; relative error, not absolute.
    x = np.concatenate(
        [
            np.linspace(-13, 13, 20011),
            -np.logspace(-30, 1.1, 1500),
            np.logspace(-30, 1.1, 1500),
            [1e-40, -1e-40, 30.0, 1e20, 3e38, -30.0, -1e20],
        ]
    ).astype(np.float32)
    got = np.asarray(_core.gelu(t(x), False))
    want = gelu64(x)
    normal = np.abs(want) > 1e-37  # below that the float result is subnormal or 0
    rel = np.abs(got[normal] - want[normal]) / np.abs(want[normal])
    assert rel.max() < 1e-6, f"{rel.max()} at x = {x[normal][np.argmax(rel)]}"
    assert np.all(np.abs(got[~normal]) <= 1e-37)
    ref = np.asarray(_core.gelu(t(x), True))
    np.testing.assert_allclose(ref, want.astype(np.float32), rtol=1e-7, atol=1e-44)


@pytest.mark.parametrize("n", [1, 7, 16, 17, 4099, 10007])
def test_gelu_keeps_nan_and_infinities_like_the_unfused_formula(n: int, level: str) -> None:
    x = (RNG.standard_normal(n) * 5).astype(np.float32)
    x[RNG.integers(n)] = np.nan
    if n > 3:
        x[-3:] = [np.inf, -np.inf, np.nan]  # in the tail
    got = np.asarray(_core.gelu(t(x), False))
    ref = np.asarray(_core.gelu(t(x), True))
    with np.errstate(invalid="ignore"):
        unfused = (x * np.float32(0.5)) * (1 + np.vectorize(math.erf)(x / np.sqrt(2)))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(unfused))
    np.testing.assert_array_equal(np.isnan(ref), np.isnan(unfused))
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-37)


def test_gelu_runs_in_place_and_threads_agree(level: str) -> None:
    x = (RNG.standard_normal(70001) * 3).astype(np.float32)
    one = np.asarray(_core.gelu(t(x), False))
    walle_engine.set_num_threads(2)
    try:
        two = np.asarray(_core.gelu(t(x), False))
        sm2 = np.asarray(_core.softmax_rows(t(x[:70000].reshape(700, 100)), 1.0, False, False))
    finally:
        walle_engine.set_num_threads(1)
    sm1 = np.asarray(_core.softmax_rows(t(x[:70000].reshape(700, 100)), 1.0, False, False))
    np.testing.assert_array_equal(one, two)
    np.testing.assert_array_equal(sm1, sm2)


# ---- fusions in models, against onnxruntime -------------------------------------------


def run_both(
    model: onnx.ModelProto, feeds: dict[str, np.ndarray], tmp_path: Path
) -> tuple[walle_engine.ConversionReport, walle_engine.Model, list[np.ndarray], list]:
    path = tmp_path / "m.walle"
    report = walle_engine.convert(model, path)
    m = walle_engine.load(path, cache=False)
    got = m.run(feeds)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, feeds)
    outs = [o.name for o in model.graph.output]
    return report, m, [got[o] for o in outs], want


def finish(b: GraphBuilder, shape: list[int], outputs: list[str], opset: int = 17):
    inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)
    model = b.model([inp], outputs, "fused")
    del model.opset_import[:]
    model.opset_import.append(helper.make_opsetid("", opset))
    return model


def erf_gelu(b: GraphBuilder, h: str, order: int) -> str:
    """The exporters' spellings of x/2 (1 + erf(x / sqrt 2))."""
    if order == 0:  # (x * (1 + erf(x / sqrt2))) * 0.5
        e = b.op("Erf", [b.op("Div", [h, b.const(np.float32(np.sqrt(2)))])])
        a = b.op("Add", [e, b.const(np.float32(1))])
        return b.op("Mul", [b.op("Mul", [h, a]), b.const(np.float32(0.5))])
    if order == 1:  # (0.5 * x) * (1 + erf(x * 1/sqrt2)), operands swapped
        e = b.op("Erf", [b.op("Mul", [h, b.const(np.float32(1 / np.sqrt(2)))])])
        a = b.op("Add", [b.const(np.float32(1)), e])
        return b.op("Mul", [a, b.op("Mul", [h, b.const(np.float32(0.5))])])
    # (1 + erf) * x then 0.5 on the left
    e = b.op("Erf", [b.op("Div", [h, b.const(np.float32(np.sqrt(2)))])])
    a = b.op("Add", [e, b.const(np.float32(1))])
    return b.op("Mul", [b.const(np.float32(0.5)), b.op("Mul", [a, h])])


@pytest.mark.parametrize("order", [0, 1, 2])
def test_erf_gelu_patterns_become_one_kernel(order: int, tmp_path: Path) -> None:
    b = GraphBuilder(order)
    h = b.op("MatMul", ["x", b.weight((24, 37), 24)])
    y = erf_gelu(b, h, order)
    model = finish(b, [5, 24], [y])
    x = (RNG.standard_normal((5, 24)) * 3).astype(np.float32)
    x[0, 0] = np.nan
    report, m, got, want = run_both(model, {"x": x}, tmp_path)
    assert report.fused_gelus == 1
    assert any("fused:gelu" in s for s in m.steps())
    assert not any("erf" in s for s in m.steps())
    np.testing.assert_array_equal(np.isnan(got[0]), np.isnan(want[0]))
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-6)


def test_gelu_pattern_with_a_shared_intermediate_is_left_alone(tmp_path: Path) -> None:
    # The erf value is also a graph output: fusing would lose it.
    b = GraphBuilder(3)
    e = b.op("Erf", [b.op("Div", ["x", b.const(np.float32(np.sqrt(2)))])])
    a = b.op("Add", [e, b.const(np.float32(1))])
    y = b.op("Mul", [b.op("Mul", ["x", a]), b.const(np.float32(0.5))])
    # and a near-miss: dividing by 1.5 is not GELU
    e2 = b.op("Erf", [b.op("Div", ["x", b.const(np.float32(1.5))])])
    y2 = b.op(
        "Mul",
        [b.op("Mul", ["x", b.op("Add", [e2, b.const(np.float32(1))])]), b.const(np.float32(0.5))],
    )
    model = finish(b, [4, 19], [y, e, y2])
    x = (RNG.standard_normal((4, 19)) * 2).astype(np.float32)
    report, _, got, want = run_both(model, {"x": x}, tmp_path)
    assert report.fused_gelus == 0
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("op", "pre", "c", "axis", "opset"),
    [
        ("Softmax", "Div", 5.656854, -1, 17),
        ("Softmax", "Mul", 0.125, -1, 17),
        ("LogSoftmax", "Div", 2.0, -1, 17),
        ("Softmax", "Div", 3.0, 1, 17),  # not the last axis: the decomposition, scaled
        ("Softmax", "Div", 2.0, 1, 11),  # legacy: flattened from axis 1, trailing rows
        ("Softmax", "Div", -2.0, -1, 17),  # a negative divisor is not folded
    ],
)
def test_softmax_fuses_and_folds_a_positive_scale(
    op: str, pre: str, c: float, axis: int, opset: int, tmp_path: Path
) -> None:
    b = GraphBuilder(4)
    s = b.op(pre, ["x", b.const(np.float32(c))])
    y = b.op(op, [s], axis=axis)
    model = finish(b, [2, 3, 17, 33], [y], opset)
    x = (RNG.standard_normal((2, 3, 17, 33)) * 6).astype(np.float32)
    x[0, 0, 0, 5] = np.nan
    x[1, 2, 3, 32] = np.inf
    report, m, got, want = run_both(model, {"x": x}, tmp_path)
    assert report.folded_softmax_scales == (1 if c > 0 else 0)
    trailing = axis == -1 or opset < 13
    assert any("fused:" in s_ for s_ in m.steps()) == trailing
    np.testing.assert_array_equal(np.isnan(got[0]), np.isnan(want[0]))
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("with_stats", [False, True])
def test_layernorm_fuses_unless_its_statistics_are_used(with_stats: bool, tmp_path: Path) -> None:
    b = GraphBuilder(5)
    gamma = b.const(RNG.standard_normal((6, 7)).astype(np.float32))
    beta = b.const(RNG.standard_normal((6, 7)).astype(np.float32))
    n_out = 3 if with_stats else 1
    outs = b.op("LayerNormalization", ["x", gamma, beta], n_out=n_out, axis=-2, epsilon=1e-3)
    outs = outs if with_stats else [outs]
    model = finish(b, [3, 5, 6, 7], list(outs))
    x = (RNG.standard_normal((3, 5, 6, 7)) + 10).astype(np.float32)
    x[0, 1, 2, 3] = np.nan
    _, m, got, want = run_both(model, {"x": x}, tmp_path)
    assert any("fused:layernorm" in s for s in m.steps()) != with_stats
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w))
        np.testing.assert_allclose(g.reshape(w.shape), w, rtol=1e-4, atol=1e-5)


def test_matmuls_sharing_an_input_merge_into_one_and_split(tmp_path: Path) -> None:
    # Q, K, V projections with biases share x; a fourth MatMul of x without a bias and
    # one of another input must stay apart (different groups); outputs keep their names.
    b = GraphBuilder(6)
    qkv = [
        b.op(
            "Add",
            [
                b.op("MatMul", ["x", b.weight((16, n), 16)]),
                b.const(RNG.standard_normal(n).astype(np.float32)),
            ],
        )
        for n in (16, 8, 24)
    ]
    plain = b.op("MatMul", ["x", b.weight((16, 5), 16)])
    other = b.op("MatMul", [b.op("Relu", ["x"]), b.weight((16, 7), 16)])
    ctx = b.op(
        "Transpose",
        [b.op("Reshape", [qkv[0], b.const(np.array([2, 3, 4, 4], np.int64))])],
        perm=[0, 2, 1, 3],
    )
    model = finish(b, [2, 3, 16], [ctx, qkv[1], qkv[2], plain, other])
    x = RNG.standard_normal((2, 3, 16)).astype(np.float32)
    report, m, got, want = run_both(model, {"x": x}, tmp_path)
    assert report.merged_matmuls == 3
    assert sum(": matmul" in s for s in m.steps()) == 3  # merged, plain, other
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
