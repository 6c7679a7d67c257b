"""Every convolution implementation — NCHWc direct (plain and blocked input), depthwise,
Winograd, and the plain im2col / 1x1 / Winograd / depthwise ones — at every SIMD level
this CPU has, forced one by one through the search, against the scalar convolution
oracle (`conv2d_reference`, double accumulation). The NCHWc kernels use blocks of 8 on
AVX2 and 16 on AVX-512, so loading with max_isa="avx2" runs the AVX2 kernels here too."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import walle_engine
from onnx import TensorProto, helper, numpy_helper
from walle_engine import _core
from walle_engine._format import ModelFile

NCHWC_LEVELS = [lvl for lvl in walle_engine.supported_isas() if lvl != "scalar"]
RNG = np.random.default_rng(7)


@dataclass(frozen=True)
class Case:
    c: int
    o: int
    hw: tuple[int, int]
    k: int
    stride: int = 1
    pad: int = 0
    dilation: int = 1
    group: int = 1
    residual: bool = False
    clamp: tuple[float, float] | None = None
    blocked_input: bool = False  # a 1x1 conv first, so the tested conv reads NCHWc
    n: int = 1  # batch


CASES = [
    Case(3, 24, (17, 13), 3, stride=2, pad=1, clamp=(0.0, 6.0)),  # image-like, plain input
    Case(3, 16, (30, 30), 7, stride=2, pad=3),
    Case(20, 40, (9, 11), 3, pad=1, residual=True, clamp=(0.0, float("inf"))),
    Case(32, 32, (7, 7), 1, blocked_input=True, residual=True),
    Case(32, 48, (8, 9), 1, stride=2, blocked_input=True),
    Case(64, 64, (14, 14), 3, pad=1, blocked_input=True, clamp=(0.0, float("inf"))),
    Case(16, 16, (12, 10), 5, pad=2, blocked_input=True),
    Case(16, 24, (10, 10), 3, pad=2, dilation=2, blocked_input=True),
    Case(24, 24, (10, 9), 3, pad=1, group=24, blocked_input=True, clamp=(0.0, 6.0)),
    Case(40, 40, (11, 11), 3, stride=2, pad=1, group=40, residual=False),
    Case(48, 48, (5, 6), 5, pad=2, group=48, blocked_input=True, residual=True),
    # 3x3 stride 1 (both Winograd tilings compete): sizes that leave partial 2x2 and 4x4
    # tiles, channels that are not whole blocks, asymmetric-looking images, batch 2.
    Case(20, 36, (13, 11), 3, pad=1, blocked_input=True, residual=True, clamp=(0.0, 6.0)),
    Case(40, 24, (7, 7), 3, pad=1, blocked_input=True, n=2),
    Case(17, 33, (9, 14), 3, pad=0, blocked_input=True),
    Case(24, 40, (6, 5), 3, pad=2, blocked_input=True, residual=True, n=3),
    Case(64, 64, (10, 10), 3, pad=1, n=2, clamp=(0.0, float("inf"))),
    # Border columns computed as column tiles: stride 2, odd sizes, wide padding, a
    # kernel taller than the unpadded image (no row uses every tap), batch 2.
    Case(24, 40, (15, 13), 3, stride=2, pad=1, blocked_input=True, residual=True, n=2),
    Case(16, 20, (9, 23), 7, stride=2, pad=3, blocked_input=True),
    Case(20, 16, (4, 12), 5, pad=3, blocked_input=True, clamp=(-1.0, 1.0)),
]


def build(case: Case) -> tuple[onnx.ModelProto, dict[str, np.ndarray], np.ndarray]:
    """The model (pre-conv, conv, residual add, clamp) and the oracle's output."""
    h, w = case.hw
    x = RNG.standard_normal((case.n, case.c, h, w)).astype(np.float32)
    wt = (RNG.standard_normal((case.o, case.c // case.group, case.k, case.k)) * 0.3).astype(
        np.float32
    )
    bias = RNG.standard_normal(case.o).astype(np.float32)
    inits = [numpy_helper.from_array(wt, "w"), numpy_helper.from_array(bias, "b")]
    nodes = []
    src = "x"
    ref_in = x
    if case.blocked_input:
        w0 = (RNG.standard_normal((case.c, case.c, 1, 1)) * 0.3).astype(np.float32)
        inits.append(numpy_helper.from_array(w0, "w0"))
        nodes.append(helper.make_node("Conv", ["x", "w0"], ["x0"]))
        src = "x0"
        ref_in = np.asarray(
            _core.conv2d_reference(
                _core.Tensor(x), _core.Tensor(w0), strides=[1, 1], pads=[0, 0], dilations=[1, 1]
            )
        )
    attrs = dict(
        kernel_shape=[case.k, case.k],
        strides=[case.stride] * 2,
        pads=[case.pad] * 4,
        dilations=[case.dilation] * 2,
        group=case.group,
    )
    nodes.append(helper.make_node("Conv", [src, "w", "b"], ["y0"], **attrs))
    out = "y0"
    oh = (h + 2 * case.pad - case.dilation * (case.k - 1) - 1) // case.stride + 1
    ow = (w + 2 * case.pad - case.dilation * (case.k - 1) - 1) // case.stride + 1
    feeds = {"x": x}
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [case.n, case.c, h, w])]
    r = None
    if case.residual:
        r = RNG.standard_normal((case.n, case.o, oh, ow)).astype(np.float32)
        feeds["r"] = r
        inputs.append(
            helper.make_tensor_value_info("r", TensorProto.FLOAT, [case.n, case.o, oh, ow])
        )
        nodes.append(helper.make_node("Add", [out, "r"], ["y1"]))
        out = "y1"
    lo, hi = case.clamp or (float("-inf"), float("inf"))
    if case.clamp:
        inits += [
            numpy_helper.from_array(np.float32(lo), "lo"),
            numpy_helper.from_array(np.float32(hi), "hi"),
        ]
        nodes.append(helper.make_node("Clip", [out, "lo", "hi"], ["y2"]))
        out = "y2"
    g = helper.make_graph(
        nodes, "conv", inputs, [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], inits
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    expected = np.asarray(
        _core.conv2d_reference(
            _core.Tensor(ref_in),
            _core.Tensor(wt),
            _core.Tensor(bias),
            _core.Tensor(r) if r is not None else None,
            strides=[case.stride] * 2,
            pads=[case.pad] * 2,
            dilations=[case.dilation] * 2,
            group=case.group,
            lo=lo,
            hi=hi,
        )
    )
    return model, feeds, expected


@pytest.mark.parametrize("level", NCHWC_LEVELS)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_every_conv_implementation_matches_the_oracle(
    case: Case, level: str, tmp_path: Path
) -> None:
    model, feeds, expected = build(case)
    path = tmp_path / "conv.walle"
    walle_engine.convert(model, path)
    graph = ModelFile(path).graph()
    forced = {}
    if case.blocked_input:  # the 1x1 conv in front must produce an NCHWc value
        pre = _core.Model(graph, tune=False, max_isa=level).plan()[0]
        forced[pre["signature"]] = f"nchwc:{level}:0"
    base = _core.Model(graph, tune=False, max_isa=level, forced=forced)
    entry = base.plan()[-1]  # the tested conv (after the blocked-input one, if any)
    cands = entry["candidates"]
    block = 16 if level == "avx512" else 8
    if case.group == 1 or case.group == case.c:
        assert any(c.startswith(("nchwc", "dwnchwc")) for c in cands), cands
    if (case.k, case.stride, case.dilation, case.group) == (3, 1, 1, 1) and case.c >= block:
        assert any(c.startswith("w4nchwc") for c in cands), cands  # F(4x4) is in the race
    if case.blocked_input:  # a blocked value stays blocked: only NCHWc implementations
        assert all("nchwc" in c for c in cands), cands
    args = [_core.Tensor(feeds[i.name]) for i in walle_engine.Model(base).inputs]
    tol = 2e-5 * max(1.0, float(np.abs(expected).max()))
    for cand in cands:
        m = _core.Model(
            graph, tune=False, max_isa=level, forced={**forced, entry["signature"]: cand}
        )
        if "nchwc" in cand:
            kernels = [s for s in m.steps() if "nchw" in s and f"{block}c" in s]
            assert kernels, (cand, m.steps())  # the blocked kernel of this level ran
        got = np.asarray(m.run(args)[0])
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=tol, err_msg=cand)


def test_pools_in_the_blocked_layout_match_the_plain_decomposition(tmp_path: Path) -> None:
    # Conv -> MaxPool -> AveragePool (count_include_pad both ways) -> GlobalAveragePool:
    # with NCHWc the pools run f32_pool_nchw*c on blocked values; the scalar level has no
    # blocked layout, so it runs the raster + reduction decomposition (oracle-tested).
    w = numpy_helper.from_array((RNG.standard_normal((20, 6, 3, 3)) * 0.3).astype(np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node(
            "MaxPool", ["c"], ["p"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]
        ),
        helper.make_node(
            "AveragePool", ["p"], ["a"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1
        ),
        helper.make_node(
            "AveragePool", ["a"], ["b"], kernel_shape=[2, 2], pads=[0, 0, 1, 1], ceil_mode=1
        ),
        helper.make_node("GlobalAveragePool", ["b"], ["g"]),
    ]
    g = helper.make_graph(
        nodes,
        "pools",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6, 15, 13])],
        [
            helper.make_tensor_value_info("b", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("g", TensorProto.FLOAT, None),
        ],
        [w],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "pools.walle"
    walle_engine.convert(model, path)
    x = RNG.standard_normal((2, 6, 15, 13)).astype(np.float32)
    ref = walle_engine.load(path, tune=False, max_isa="scalar").run({"x": x})
    for level in NCHWC_LEVELS:
        m = walle_engine.load(path, tune=False, max_isa=level)
        assert any("pool:f32_pool_nchw" in s for s in m.steps()), m.steps()
        got = m.run({"x": x})
        for k in ref:
            np.testing.assert_allclose(got[k], ref[k], rtol=1e-5, atol=1e-5, err_msg=f"{level} {k}")
