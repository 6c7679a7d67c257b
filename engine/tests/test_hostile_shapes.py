"""Hostile shapes, strides and attributes: the engine refuses what does not fit, cleanly.

Every public entry that takes a size (tensor creation, walle_engine.np, views, strided
copies, rasters and their composition, select, reductions, cv.resize, and graph ops with
their attributes) is driven with generated values well past its limits: huge and negative
dims, too many dims, strides and offsets whose products overflow int64, window attributes
of the wrong count or sign. The property is the same everywhere: the call either raises
ValueError / OverflowError / MemoryError, or returns tensors whose buffers hold exactly
what their shapes say (and, where a reference is cheap, the right values).

The calls run in a child process ("the device"): a crash there (SIGSEGV, SIGFPE, abort)
fails the test naming the code that did it, and the next example gets a fresh child. The
child caps engine memory with a budget, so a valid but enormous shape is a MemoryError,
never an out-of-memory kill. Hypothesis runs are derandomized (the same examples every
run), about 120 examples per property.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("walle_engine")

SETTINGS = settings(
    max_examples=120,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
MAX_DIMS, MAX_ELEMENTS = 16, 2**40
REFUSALS = ("ValueError", "ModelError", "OverflowError", "MemoryError")

CHILD = r'''
import json, math, sys, traceback
import numpy as np
import walle_engine
from walle_engine import _core, cv, ops
from walle_engine import np as wnp
from walle_engine._core import Tensor


def graph(op, inputs, consts, attrs, n_out=1, extra=()):
    """A one-node model: graph inputs (name, dtype, shape), then constants, then `extra`
    names (omitted inputs are "")."""
    names = [n for n, _, _ in inputs] + list(consts) + list(extra)
    outs = [f"y{i}" for i in range(n_out)]
    g = {
        "inputs": list(inputs),
        "outputs": outs,
        "constants": {k: ops.tensor(v) if isinstance(v, np.ndarray) else v for k, v in consts.items()},
        "nodes": [(op, "node", names, outs, attrs)],
    }
    return _core.Model(g, tune=False)


def const(values, dtype):
    return Tensor(np.array(values, dtype=dtype))  # contiguous, and 0-d stays 0-d


def encode(v):
    if isinstance(v, wnp.ndarray):
        v = v.tensor
    if isinstance(v, Tensor):
        m = memoryview(v)
        n = math.prod(v.shape)
        assert m.nbytes == n * m.itemsize, (m.nbytes, v.shape)
        if m.nbytes <= 1 << 26:
            m.tobytes()  # every byte the shape claims is readable
        out = {"dtype": v.dtype, "shape": list(v.shape), "nbytes": m.nbytes}
        if n <= 4096:
            out["values"] = np.asarray(v).astype(np.float64).ravel().tolist()
        return out
    if isinstance(v, np.ndarray):
        return {"dtype": str(v.dtype), "shape": list(v.shape), "values": v.astype(np.float64).ravel().tolist()}
    if isinstance(v, (list, tuple)):
        return [encode(x) for x in v]
    return v


def main():
    for line in sys.stdin:
        code = json.loads(line)
        env = {"np": np, "wnp": wnp, "walle_engine": walle_engine, "_core": _core, "cv": cv,
               "ops": ops, "Tensor": Tensor, "graph": graph, "math": math, "const": const, "result": None}
        try:
            with walle_engine.budget("hostile", 1 << 28):
                exec(code, env)
                reply = {"ok": True, "value": encode(env["result"])}
        except Exception as e:  # reported to the test, which judges it
            reply = {"ok": False, "type": type(e).__name__, "message": str(e)[:500],
                     "trace": traceback.format_exc()[-1500:]}
        print(json.dumps(reply, default=float), flush=True)


main()
'''


class Device:
    """A child process that runs engine calls; a crash is reported, then it restarts."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None

    def _start(self) -> subprocess.Popen[str]:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", CHILD],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        return self.proc

    def run(self, code: str) -> dict[str, Any]:
        proc = self._start()
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(json.dumps(textwrap.dedent(code)) + "\n")
            proc.stdin.flush()
            line = proc.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            rc = proc.wait(timeout=30)
            err = proc.stderr.read()[-2000:] if proc.stderr else ""
            self.proc = None
            raise AssertionError(f"the device process died ({rc}) running:\n{code}\n{err}")
        return json.loads(line)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def device() -> Iterator[Device]:
    d = Device()
    yield d
    d.close()


def refused_or(reply: dict[str, Any]) -> Any:
    """The call's value, or None when it was refused with one of the clean errors."""
    if reply["ok"]:
        return reply["value"]
    assert reply["type"] in REFUSALS, reply
    return None


def fits(shape: list[int]) -> bool:
    nonzero = [d for d in shape if d]
    return (
        len(shape) <= MAX_DIMS and all(d >= 0 for d in shape) and math.prod(nonzero) <= MAX_ELEMENTS
    )


def check_tensor(v: dict[str, Any], shape: list[int] | None = None) -> None:
    """A returned tensor's buffer holds exactly its shape's elements."""
    if shape is not None:
        assert v["shape"] == shape
    assert fits(v["shape"])
    itemsize = {"float32": 4, "int32": 4, "int64": 8, "bool": 1, "uint8": 1}[v["dtype"]]
    assert v["nbytes"] == math.prod(v["shape"]) * itemsize


# ---- strategies

BIG = [2**31, 2**32, 2**40, 2**40 + 1, 2**62, 2**63 - 1]
dim = st.one_of(st.integers(0, 4), st.sampled_from(BIG), st.integers(-3, -1))
small_dim = st.integers(0, 4)
shape = st.lists(dim, max_size=20)
stride = st.one_of(
    st.integers(-5, 5), st.sampled_from([2**40, -(2**40), 2**62, -(2**62), 2**63 - 1])
)
offset = st.one_of(st.integers(-3, 30), st.sampled_from([2**62, -(2**62), 2**63 - 1]))


# ---- tensors and walle_engine.np


@SETTINGS
@given(s=shape, dtype=st.sampled_from(["float32", "int64", "bool", "uint8"]))
def test_tensor_empty_refuses_shapes_that_do_not_fit(
    device: Device, s: list[int], dtype: str
) -> None:
    v = refused_or(device.run(f"result = Tensor.empty({dtype!r}, {s!r})"))
    if not fits(s):
        assert v is None, s
    if v is not None:
        check_tensor(v, s)


@SETTINGS
@given(
    fn=st.sampled_from(["zeros", "ones", "empty", "full", "broadcast_to", "reshape", "eye"]),
    s=shape,
)
def test_np_creation_refuses_shapes_that_do_not_fit(device: Device, fn: str, s: list[int]) -> None:
    code = {
        "zeros": f"result = wnp.zeros({s!r}, dtype='uint8')",
        "ones": f"result = wnp.ones({s!r})",
        "empty": f"result = wnp.empty({s!r}, dtype='int64')",
        "full": f"result = wnp.full({s!r}, 7, dtype='int32')",
        "broadcast_to": f"result = wnp.broadcast_to(wnp.zeros(1), {s!r})",
        "reshape": f"result = wnp.zeros(0).reshape({s!r})",
        "eye": f"result = wnp.eye(*{s[:2]!r})" if len(s) >= 1 else "result = wnp.eye(0)",
    }[fn]
    reply = device.run(code)
    if not reply["ok"] and reply["type"] == "TypeError":
        return  # a wrong argument count or type (eye(), reshape of 0 into a non-empty shape)
    v = refused_or(reply)
    want = s[:2] if fn == "eye" else s
    if fn == "reshape" and s.count(-1) == 1:
        want = [0 if d == -1 else d for d in s]  # one inferred dimension
    if fn == "eye" and len(s) == 1:
        want = [s[0], s[0]]
    if not fits(want):
        assert v is None, (fn, s)
    if v is not None:
        check_tensor(v)


@SETTINGS
@given(
    start=st.one_of(st.integers(-5, 5), st.sampled_from([-(2**62), 2**62])),
    stop=st.one_of(st.integers(-5, 50), st.sampled_from([2**40 + 1, 2**62, 2**63 - 1])),
    step=st.one_of(st.integers(-3, 3).filter(bool), st.sampled_from([1e-30, 0.5])),
    num=st.one_of(st.integers(0, 50), st.sampled_from([2**31, 2**40 + 1, 2**62])),
)
def test_np_ranges_refuse_huge_counts(
    device: Device, start: int, stop: int, step: float, num: int
) -> None:
    for code in (
        f"result = wnp.arange({start!r}, {stop!r}, {step!r})",
        f"result = wnp.linspace(0, 1, {num!r})",
    ):
        v = refused_or(device.run(code))
        if v is not None:
            check_tensor(v)
            assert v["shape"][0] <= MAX_ELEMENTS


# ---- views, strided copies, rasters


def reach(off: int, strides: list[int], size: list[int]) -> tuple[int, int]:
    lo = hi = off
    for n, s in zip(size, strides, strict=True):
        ext = (n - 1) * s
        if ext > 0:
            hi += ext
        else:
            lo += ext
    return lo, hi


@SETTINGS
@given(n=st.integers(0, 24), off=offset, s=st.lists(dim, max_size=4))
def test_views_stay_inside_their_tensor(device: Device, n: int, off: int, s: list[int]) -> None:
    v = refused_or(
        device.run(f"result = _core.view(_core.arange(0, 1, {n}, 'int64'), {off}, {s!r})")
    )
    inside = fits(s) and 0 <= off and off + math.prod(s) <= n
    assert (v is not None) == inside, (n, off, s)
    if v is not None:
        check_tensor(v, s)
        assert v["values"] == list(range(off, off + math.prod(s)))


@SETTINGS
@given(
    n_src=st.integers(1, 24),
    n_dst=st.integers(1, 24),
    size=st.lists(
        st.one_of(st.integers(0, 4), st.sampled_from([2**40, 2**62])), min_size=1, max_size=4
    ),
    data=st.data(),
)
def test_strided_copies_stay_inside_both_tensors(
    device: Device, n_src: int, n_dst: int, size: list[int], data: st.DataObject
) -> None:
    ss = data.draw(st.lists(stride, min_size=len(size), max_size=len(size)))
    ds = data.draw(st.lists(stride, min_size=len(size), max_size=len(size)))
    so, do = data.draw(offset), data.draw(offset)
    code = f"""
        dst = _core.arange(0, 0, {n_dst}, 'int64')
        _core.strided_copy(dst, {do}, {ds!r}, _core.arange(1, 1, {n_src}, 'int64'), {so}, {ss!r}, {size!r})
        result = dst
    """
    v = refused_or(device.run(code))
    empty = fits(size) and math.prod(size) == 0
    ok = fits(size) and (
        empty
        or (
            reach(so, ss, size)[0] >= 0
            and reach(so, ss, size)[1] < n_src
            and reach(do, ds, size)[0] >= 0
            and reach(do, ds, size)[1] < n_dst
        )
    )
    assert (v is not None) == ok, (size, ss, ds, so, do)
    if v is not None:
        expect = [0.0] * n_dst
        for idx in np.ndindex(*size):
            s = so + sum(i * k for i, k in zip(idx, ss, strict=True))
            d = do + sum(i * k for i, k in zip(idx, ds, strict=True))
            expect[d] = float(s + 1)
        assert v["values"] == expect


region_dim = st.one_of(st.integers(0, 4), st.sampled_from([2**31, 2**40, 2**62]))


@st.composite
def regions(draw: st.DrawFn, n_inputs: int) -> list[tuple[Any, ...]]:
    out = []
    for _ in range(draw(st.integers(0, 3))):
        nd = draw(st.integers(0, 3))
        out.append(
            (
                draw(st.one_of(st.integers(0, n_inputs - 1), st.sampled_from([-1, n_inputs]))),
                draw(offset),
                draw(offset),
                draw(st.lists(region_dim, min_size=nd, max_size=nd)),
                draw(st.lists(stride, min_size=nd, max_size=nd)),
                draw(st.lists(stride, min_size=nd, max_size=nd)),
            )
        )
    return out


def raster_ok(regs: list[tuple[Any, ...]], numels: list[int], out: int) -> bool:
    total = 0
    for i, so, do, size, ss, ds in regs:
        if not 0 <= i < len(numels):
            return False
        if math.prod(size) == 0:
            continue
        count = math.prod(size)
        total += count
        if count > out or total > 4 * out + 4096:
            return False
        (slo, shi), (dlo, dhi) = reach(so, ss, size), reach(do, ds, size)
        if not (0 <= slo and shi < numels[i] and 0 <= dlo and dhi < out):
            return False
        if max(abs(x) for x in (so, do, slo, shi, dlo, dhi)) >= 2**63:
            return False
    return True


def raster_reference(
    sources: list[list[float]], regs: list[tuple[Any, ...]], out: int, fill: float | None
) -> list[float]:
    y = [fill if fill is not None else 0.0] * out
    for i, so, do, size, ss, ds in regs:
        for idx in np.ndindex(*size):
            s = so + sum(a * b for a, b in zip(idx, ss, strict=True))
            d = do + sum(a * b for a, b in zip(idx, ds, strict=True))
            y[d] = sources[i][s]
    return y


@SETTINGS
@given(
    numels=st.lists(st.integers(1, 16), min_size=1, max_size=2),
    out=st.lists(st.one_of(st.integers(0, 5), st.sampled_from([2**41, 2**62])), max_size=3),
    data=st.data(),
)
def test_raster_regions_stay_inside_sources_and_output(
    device: Device, numels: list[int], out: list[int], data: st.DataObject
) -> None:
    regs = data.draw(regions(len(numels)))
    ins = ", ".join(f"_core.arange({100 * k}, 1, {n}, 'float32')" for k, n in enumerate(numels))
    v = refused_or(device.run(f"result = ops.raster([{ins}], {regs!r}, {out!r}, fill=-1.0)"))
    ok = fits(out) and raster_ok(regs, numels, math.prod(out))
    assert (v is not None) == ok, (numels, regs, out)
    if v is not None:
        check_tensor(v, out)
        sources = [[float(100 * k + j) for j in range(n)] for k, n in enumerate(numels)]
        assert v["values"] == raster_reference(sources, regs, math.prod(out), -1.0)


@SETTINGS
@given(
    inner_shape=st.lists(st.integers(0, 4), min_size=1, max_size=3),
    data=st.data(),
)
def test_composed_rasters_read_what_the_two_copies_read(
    device: Device, inner_shape: list[int], data: st.DataObject
) -> None:
    n_v = math.prod(inner_shape)
    inner = data.draw(regions(1))
    outer = data.draw(regions(1))
    n_src = 16
    code = f"""
        merged = _core.compose_raster({inner!r}, {inner_shape!r}, {outer!r})
        result = merged if merged is None else [list(r) for r in merged]
    """
    reply = device.run(code)
    merged = refused_or(reply)
    if merged is None:
        return
    # Where both copies are valid, the merged one must be too and read the same values.
    if not (raster_ok(inner, [n_src], n_v) and raster_ok(outer, [n_v], 64)):
        return
    src = [float(j) for j in range(n_src)]
    middle = raster_reference([src], inner, n_v, 0.0)
    want = raster_reference([middle], outer, 64, -1.0)
    merged_regs = [tuple(r) for r in merged]
    assert raster_ok(merged_regs, [n_src], 64), (inner, outer, merged)
    assert raster_reference([src], merged_regs, 64, -1.0) == want


def test_compose_raster_of_zero_size_dims_does_not_divide_by_zero(device: Device) -> None:
    for inner, shape, outer in (
        ([(0, 0, 0, [0, 3], [3, 1], [3, 1])], [0, 3], [(0, 0, 0, [2], [1], [1])]),
        ([(0, 0, 0, [2, 0], [0, 1], [0, 1])], [2, 0], [(0, 5, 0, [2], [7], [1])]),
        ([(0, 0, 0, [3], [1], [0])], [3], [(0, 1, 0, [2], [1], [1])]),
    ):
        reply = device.run(f"result = _core.compose_raster({inner!r}, {shape!r}, {outer!r})")
        assert reply["ok"] or reply["type"] in REFUSALS, reply


DTYPES = ["float32", "int32", "int64", "bool", "uint8"]


@SETTINGS
@given(c=st.sampled_from(DTYPES), a=st.sampled_from(DTYPES), b=st.sampled_from(DTYPES))
def test_select_never_reads_an_operand_as_another_dtype(
    device: Device, c: str, a: str, b: str
) -> None:
    code = f"""
        t = lambda dt: _core.cast(_core.arange(1, 1, 4, 'int64'), dt)
        result = ops.select(t({c!r}), t({a!r}), t({b!r}))
    """
    v = refused_or(device.run(code))
    assert (v is not None) == (c == "bool" and a == b), (c, a, b)


@SETTINGS
@given(
    s=st.lists(st.integers(0, 3), max_size=3),
    axes=st.lists(st.integers(-4, 4), max_size=3),
    op=st.sampled_from(["sum", "mean", "max", "min", "prod"]),
    reference=st.booleans(),
)
def test_reductions_and_argmax_of_any_rank(
    device: Device, s: list[int], axes: list[int], op: str, reference: bool
) -> None:
    code = f"""
        x = _core.cast(_core.view(_core.arange(1, 1, {math.prod(s)}, 'int64'), 0, {s!r}), 'float32')
        result = [ops.reduce({op!r}, x, {axes!r}, keepdims=False, reference={reference})]
    """
    v = refused_or(device.run(code))
    if v is not None:
        check_tensor(v[0])
        x = np.arange(1, math.prod(s) + 1, dtype=np.float64).reshape(s)
        if (
            x.ndim
            and all(-x.ndim <= a < x.ndim for a in axes)
            and (x.size or op in ("sum", "prod"))
        ):
            ax = tuple(sorted({a % x.ndim for a in axes}))
            want = getattr(np, op)(x, axis=ax) if ax else x
            assert v[0]["values"] == pytest.approx(np.ravel(want).tolist())
    for axis in axes[:1] or [0]:
        code = f"""
            x = _core.view(_core.arange(1, 1, {math.prod(s)}, 'float32'), 0, {s!r})
            result = ops.argmax(x, {axis}, keepdims=False, reference={reference})
        """
        a = refused_or(device.run(code))
        if a is not None:
            check_tensor(a)
            if not s:
                assert a["values"] == [0.0]


def test_zero_d_reduce_and_argmax(device: Device) -> None:
    for reference in (False, True):
        for op in ("sum", "mean", "max", "min", "prod"):
            v = refused_or(
                device.run(
                    f"result = ops.reduce({op!r}, const(3.5, 'float32'), [0], reference={reference})"
                )
            )
            assert v == {"dtype": "float32", "shape": [], "nbytes": 4, "values": [3.5]}
        v = refused_or(
            device.run(f"result = ops.argmax(const(3.5, 'float32'), 0, reference={reference})")
        )
        assert v is not None and v["values"] == [0.0]
    assert refused_or(device.run("result = wnp.argmax(wnp.asarray(2.0))"))["values"] == [0.0]


@SETTINGS
@given(
    img=st.lists(st.integers(0, 3), min_size=2, max_size=4),
    size=st.tuples(
        st.one_of(st.integers(-1, 6), st.sampled_from([2**20, 2**31 - 1, 2**40, 2**62])),
        st.one_of(st.integers(-1, 6), st.sampled_from([2**20, 2**31 - 1, 2**40, 2**62])),
    ),
    mode=st.sampled_from(["bilinear", "nearest", "nearest_exact"]),
    dtype=st.sampled_from(["uint8", "float32", "int64"]),
)
def test_cv_resize_of_odd_images_and_sizes(
    device: Device, img: list[int], size: tuple[int, int], mode: str, dtype: str
) -> None:
    code = (
        f"result = cv.resize(wnp.zeros({img!r}, dtype={dtype!r}), {size!r}, interpolation={mode!r})"
    )
    reply = device.run(code)
    if not reply["ok"] and reply["type"] == "TypeError":
        return  # a keyword or argument type the facade does not take
    v = refused_or(reply)
    if v is not None:
        check_tensor(v)
        assert v["shape"][:2] == [size[1], size[0]]


# ---- graph ops


def run_graph(device: Device, code: str) -> Any:
    return refused_or(device.run(code))


@SETTINGS
@given(
    x=st.lists(st.integers(0, 4), max_size=4),
    target=st.lists(
        st.one_of(st.integers(-2, 6), st.sampled_from([2**31, 2**32, 2**62])), max_size=5
    ),
    allowzero=st.integers(0, 1),
)
def test_graph_reshape_targets(
    device: Device, x: list[int], target: list[int], allowzero: int
) -> None:
    code = f"""
        m = graph('Reshape', [('x', 'float32', {x!r})], {{'s': const({target!r}, 'int64')}}, {{'allowzero': {allowzero}}})
        result = m.run([_core.cast(_core.view(_core.arange(0, 1, {math.prod(x)}, 'int64'), 0, {x!r}), 'float32')])
    """
    v = run_graph(device, code)
    if v is not None:
        check_tensor(v[0])
        assert math.prod(v[0]["shape"]) == math.prod(x)
        assert v[0]["values"] == [float(i) for i in range(math.prod(x))]


def test_graph_reshape_whose_element_count_wraps_is_refused(device: Device) -> None:
    for target in ([2**32, 2**32], [2**62, 4], [-1, 2**63 - 1], [2**31, 2**31, 4, 0]):
        code = f"""
            m = graph('Reshape', [('x', 'float32', [1])], {{'s': const({target!r}, 'int64')}}, {{}})
            result = m.run([const([1.0], 'float32')])
        """
        assert run_graph(device, code) is None, target


@SETTINGS
@given(
    x=st.lists(st.integers(1, 3), max_size=3),
    target=st.lists(
        st.one_of(st.integers(0, 3), st.sampled_from([2**31, 2**40, 2**62])), max_size=4
    ),
    op=st.sampled_from(["Expand", "Tile", "ConstantOfShape"]),
)
def test_graph_expand_tile_and_constant_of_shape(
    device: Device, x: list[int], target: list[int], op: str
) -> None:
    code = f"""
        m = graph({op!r}, [('x', 'float32', {x!r})] if {op!r} != 'ConstantOfShape' else [],
                  {{'s': const({target!r}, 'int64')}}, {{}})
        result = m.run([_core.cast(_core.view(_core.arange(0, 1, {math.prod(x)}, 'int64'), 0, {x!r}), 'float32')]
                       if {op!r} != 'ConstantOfShape' else [])
    """
    v = run_graph(device, code)
    if v is None:
        return
    check_tensor(v[0])
    ref = np.arange(math.prod(x), dtype=np.float64).reshape(x)
    if op == "Expand":
        want = ref * np.ones(target)
    elif op == "Tile":
        want = np.tile(ref, target)
    else:
        want = np.zeros(target)
    assert v[0]["shape"] == list(want.shape) and v[0]["values"] == want.ravel().tolist()


@SETTINGS
@given(
    start=st.one_of(st.floats(-10, 10), st.sampled_from([float("nan"), float("inf"), -1e300])),
    limit=st.one_of(st.floats(-10, 10), st.sampled_from([float("inf"), 1e300, 2.0**41])),
    delta=st.one_of(st.floats(-3, 3), st.sampled_from([0.0, 1e-300, float("nan")])),
    dtype=st.sampled_from(["float32", "int64", "int32"]),
)
def test_graph_range_is_finite_and_bounded(
    device: Device, start: float, limit: float, delta: float, dtype: str
) -> None:
    if dtype != "float32" and not all(
        math.isfinite(f) and abs(f) < 2**62 for f in (start, limit, delta)
    ):
        return  # not an integer value (numpy refuses to make the constant)
    a, b, c = (f"const(float({str(f)!r}), {dtype!r})" for f in (start, limit, delta))
    code = f"""
        m = graph('Range', [], {{'a': {a}, 'b': {b}, 'c': {c}}}, {{}})
        result = m.run([])
    """
    v = refused_or(device.run(code))
    if v is not None:
        check_tensor(v[0])
        assert v[0]["shape"][0] <= 2**40


int64s = st.one_of(st.integers(-6, 6), st.sampled_from([-(2**63), 2**63 - 1, 2**62, -(2**62)]))


@SETTINGS
@given(
    x=st.lists(st.integers(0, 4), min_size=1, max_size=3),
    starts=st.lists(int64s, max_size=3),
    ends=st.lists(int64s, max_size=3),
    axes=st.one_of(st.none(), st.lists(st.integers(-4, 4), max_size=3)),
    steps=st.one_of(st.none(), st.lists(int64s, max_size=3)),
)
def test_graph_slice(
    device: Device,
    x: list[int],
    starts: list[int],
    ends: list[int],
    axes: list[int] | None,
    steps: list[int] | None,
) -> None:
    if axes is None and steps is not None:
        axes = list(range(len(starts)))
    consts = {"st": starts, "en": ends}
    if axes is not None:
        consts["ax"] = axes
    if steps is not None:
        consts["sp"] = steps
    const_code = ", ".join(f"{k!r}: const({v!r}, 'int64')" for k, v in consts.items())
    code = f"""
        m = graph('Slice', [('x', 'float32', {x!r})], {{{const_code}}}, {{}})
        result = m.run([_core.cast(_core.view(_core.arange(0, 1, {math.prod(x)}, 'int64'), 0, {x!r}), 'float32')])
    """
    v = run_graph(device, code)
    if v is None:
        return
    check_tensor(v[0])
    ref = np.arange(math.prod(x), dtype=np.float64).reshape(x)
    index = [slice(None)] * len(x)
    for i, a in enumerate(axes or range(len(starts))):  # empty lists mean the defaults
        step = steps[i] if steps else 1
        index[a % len(x)] = slice(starts[i], ends[i], step)
    want = ref[tuple(index)]
    assert v[0]["shape"] == list(want.shape), (x, starts, ends, axes, steps)
    assert v[0]["values"] == want.ravel().tolist()


@SETTINGS
@given(
    x=st.lists(st.integers(0, 3), min_size=1, max_size=3),
    pads=st.lists(
        st.one_of(st.integers(-3, 3), st.sampled_from([2**40, -(2**40), 2**62, -(2**63)])),
        max_size=7,
    ),
    mode=st.sampled_from(["constant", "edge", "reflect"]),
)
def test_graph_pad(device: Device, x: list[int], pads: list[int], mode: str) -> None:
    code = f"""
        m = graph('Pad', [('x', 'float32', {x!r})], {{'p': const({pads!r}, 'int64')}}, {{'mode': {mode!r}}})
        result = m.run([_core.cast(_core.view(_core.arange(0, 1, {math.prod(x)}, 'int64'), 0, {x!r}), 'float32')])
    """
    v = run_graph(device, code)
    if v is None:
        return
    check_tensor(v[0])
    assert len(pads) == 2 * len(x)
    if min(pads) >= 0:
        ref = np.arange(math.prod(x), dtype=np.float64).reshape(x)
        width = list(zip(pads[: len(x)], pads[len(x) :], strict=True))
        want = np.pad(ref, width, mode=mode) if mode != "constant" else np.pad(ref, width)
        assert v[0]["shape"] == list(want.shape) and v[0]["values"] == want.ravel().tolist()


@SETTINGS
@given(
    x=st.lists(st.integers(0, 4), max_size=3),
    axis=st.integers(-4, 4),
    split=st.one_of(
        st.none(), st.lists(st.one_of(st.integers(-1, 4), st.sampled_from([2**62])), max_size=4)
    ),
    n_out=st.integers(1, 3),
    num_outputs=st.one_of(st.none(), st.integers(-1, 5)),
)
def test_graph_split(
    device: Device,
    x: list[int],
    axis: int,
    split: list[int] | None,
    n_out: int,
    num_outputs: int | None,
) -> None:
    attrs: dict[str, Any] = {"axis": axis}
    if num_outputs is not None:
        attrs["num_outputs"] = num_outputs
    consts = f"{{'s': const({split!r}, 'int64')}}" if split is not None else "{}"
    code = f"""
        m = graph('Split', [('x', 'float32', {x!r})], {consts}, {attrs!r}, n_out={n_out})
        result = m.run([_core.cast(_core.view(_core.arange(0, 1, {math.prod(x)}, 'int64'), 0, {x!r}), 'float32')])
    """
    v = run_graph(device, code)
    if v is None:
        return
    ax = axis % len(x)
    assert sum(t["shape"][ax] for t in v) <= x[ax]
    for t in v:
        check_tensor(t)


@SETTINGS
@given(
    shapes=st.lists(st.lists(st.integers(0, 3), max_size=3), min_size=1, max_size=3),
    dtypes=st.lists(st.sampled_from(["float32", "int64"]), min_size=3, max_size=3),
    axis=st.integers(-3, 3),
)
def test_graph_concat_needs_matching_ranks_and_dtypes(
    device: Device, shapes: list[list[int]], dtypes: list[str], axis: int
) -> None:
    inputs = [(f"x{i}", dtypes[i], s) for i, s in enumerate(shapes)]
    code = f"""
        m = graph('Concat', {inputs!r}, {{}}, {{'axis': {axis}}})
        xs = [_core.view(_core.cast(_core.arange(0, 1, math.prod(s), 'int64'), dt), 0, s)
              for _, dt, s in {inputs!r}]
        result = m.run(xs)
    """
    v = run_graph(device, code)
    if v is None:
        return
    r = len(shapes[0])
    assert all(len(s) == r for s in shapes) and len(set(dtypes[: len(shapes)])) == 1
    ax = axis % r
    want = np.concatenate([np.arange(math.prod(s)).reshape(s) for s in shapes], axis=ax)
    assert v[0]["shape"] == list(want.shape) and v[0]["values"] == want.ravel().tolist()


@SETTINGS
@given(
    x=st.lists(st.integers(0, 3), max_size=4),
    axis=st.integers(-5, 5),
    op=st.sampled_from(["Flatten", "Transpose", "Gather"]),
    perm=st.lists(st.integers(-1, 4), max_size=5),
    idx=st.lists(st.one_of(st.integers(-4, 4), st.sampled_from([2**40, -(2**62)])), max_size=4),
)
def test_graph_flatten_transpose_gather(
    device: Device, x: list[int], axis: int, op: str, perm: list[int], idx: list[int]
) -> None:
    attrs = {"axis": axis} if op != "Transpose" else {"perm": perm}
    consts = f"{{'i': const({idx!r}, 'int64')}}" if op == "Gather" else "{}"
    code = f"""
        m = graph({op!r}, [('x', 'float32', {x!r})], {consts}, {attrs!r})
        result = m.run([_core.cast(_core.view(_core.arange(0, 1, {math.prod(x)}, 'int64'), 0, {x!r}), 'float32')])
    """
    v = run_graph(device, code)
    if v is None:
        return
    check_tensor(v[0])
    ref = np.arange(math.prod(x), dtype=np.float64).reshape(x)
    if op == "Flatten":
        a = axis % (len(x) + 1) if axis < 0 else axis
        want = ref.reshape(math.prod(x[:a]), -1) if math.prod(x[:a]) else np.zeros((0, 0))
        assert math.prod(v[0]["shape"]) == ref.size
        if want.size:
            assert v[0]["shape"] == list(want.shape)
    elif op == "Transpose":
        perm = perm or list(range(len(x)))[::-1]  # the default reverses the dims
        assert sorted(p % max(len(x), 1) for p in perm) == list(range(len(x)))
        want = np.transpose(ref, [p % len(x) for p in perm]) if x else ref
        assert v[0]["shape"] == list(want.shape), (x, perm)
        assert v[0]["values"] == want.ravel().tolist()
    else:
        want = np.take(ref, np.array(idx, dtype=np.int64), axis=axis)
        assert v[0]["shape"] == list(want.shape) and v[0]["values"] == want.ravel().tolist()


window = st.one_of(
    st.just(None),
    st.lists(st.one_of(st.integers(-1, 3), st.sampled_from([2**31, 2**40, 2**62])), max_size=5),
)


@SETTINGS
@given(
    op=st.sampled_from(["Conv", "MaxPool", "AveragePool"]),
    kernel=window,
    strides=window,
    dilations=window,
    pads=window,
    group=st.one_of(st.integers(-1, 4), st.sampled_from([2**40])),
    w_shape=st.lists(st.integers(0, 3), min_size=2, max_size=5),
)
def test_graph_window_attributes(
    device: Device,
    op: str,
    kernel: list[int] | None,
    strides: list[int] | None,
    dilations: list[int] | None,
    pads: list[int] | None,
    group: int,
    w_shape: list[int],
) -> None:
    attrs: dict[str, Any] = {"group": group} if op == "Conv" else {"kernel_shape": kernel or [2, 2]}
    if op == "Conv" and kernel is not None:
        attrs["kernel_shape"] = kernel
    for name, value in (("strides", strides), ("dilations", dilations), ("pads", pads)):
        if value is not None:
            attrs[name] = value
    consts = f"{{'w': Tensor.empty('float32', {w_shape!r})}}" if op == "Conv" else "{}"
    code = f"""
        m = graph({op!r}, [('x', 'float32', [1, 2, 5, 5])], {consts}, {attrs!r})
        result = m.run([Tensor.empty('float32', [1, 2, 5, 5])])
    """
    v = run_graph(device, code)
    if v is not None:
        check_tensor(v[0])
        assert v[0]["shape"][:1] == [1] and all(d >= 1 for d in v[0]["shape"])


@SETTINGS
@given(
    a=st.lists(st.integers(0, 4), max_size=4),
    b=st.lists(st.integers(0, 4), max_size=4),
    trans=st.booleans(),
)
def test_graph_matmul_and_gemm_inner_dimensions(
    device: Device, a: list[int], b: list[int], trans: bool
) -> None:
    for op, attrs in (("MatMul", {}), ("Gemm", {"transB": int(trans)})):
        code = f"""
            m = graph({op!r}, [('a', 'float32', {a!r})], {{'b': Tensor.empty('float32', {b!r})}}, {attrs!r})
            result = m.run([Tensor.empty('float32', {a!r})])
        """
        v = run_graph(device, code)
        if v is None:
            continue
        check_tensor(v[0])
        if op == "Gemm":
            assert len(a) == 2 and len(b) == 2 and a[1] == (b[1] if trans else b[0]), (a, b, trans)
        elif len(a) >= 2 and len(b) >= 2:
            assert a[-1] == b[-2], (a, b)


@SETTINGS
@given(
    c=st.sampled_from(DTYPES),
    a=st.sampled_from(DTYPES),
    b=st.sampled_from(DTYPES),
)
def test_graph_where_needs_a_bool_condition(device: Device, c: str, a: str, b: str) -> None:
    code = f"""
        m = graph('Where', [('c', {c!r}, [3]), ('a', {a!r}, [3]), ('b', {b!r}, [3])], {{}}, {{}})
        result = m.run([_core.cast(_core.arange(0, 1, 3, 'int64'), dt) for dt in ({c!r}, {a!r}, {b!r})])
    """
    v = run_graph(device, code)
    assert (v is not None) == (c == "bool" and a == b), (c, a, b)


@SETTINGS
@given(
    x=st.lists(st.integers(1, 3), max_size=4),
    n=st.lists(st.integers(0, 4), min_size=4, max_size=4),
    op=st.sampled_from(["BatchNormalization", "InstanceNormalization"]),
)
def test_graph_norm_parameter_sizes(device: Device, x: list[int], n: list[int], op: str) -> None:
    k = 4 if op == "BatchNormalization" else 2
    consts = ", ".join(f"'p{i}': Tensor.empty('float32', [{n[i]}])" for i in range(k))
    code = f"""
        m = graph({op!r}, [('x', 'float32', {x!r})], {{{consts}}}, {{}})
        result = m.run([Tensor.empty('float32', {x!r})])
    """
    v = run_graph(device, code)
    if v is not None:
        check_tensor(v[0], x)
        assert len(x) >= 2 and all(m == x[1] for m in n[:k]), (op, x, n)


@pytest.mark.parametrize(
    "code",
    [
        # a node that names fewer inputs than its op reads
        "result = graph('Gather', [('x', 'float32', [3])], {}, {}).run([Tensor.empty('float32', [3])])",
        "result = graph('Conv', [('x', 'float32', [1, 1, 3, 3])], {}, {}).run([Tensor.empty('float32', [1, 1, 3, 3])])",
        # a zero stride, a zero group, a kernel larger than the input
        "result = graph('Conv', [('x', 'float32', [1, 1, 3, 3])], {'w': Tensor.empty('float32', [1, 1, 2, 2])},"
        " {'strides': [0, 1]}).run([Tensor.empty('float32', [1, 1, 3, 3])])",
        "result = graph('Conv', [('x', 'float32', [1, 1, 3, 3])], {'w': Tensor.empty('float32', [1, 1, 2, 2])},"
        " {'group': 0}).run([Tensor.empty('float32', [1, 1, 3, 3])])",
        "result = graph('MaxPool', [('x', 'float32', [1, 1, 3, 3])], {}, {'kernel_shape': [9, 9]})"
        ".run([Tensor.empty('float32', [1, 1, 3, 3])])",
        # pads of 2**31 on every side of a depthwise convolution (its scratch plane would be 2**62)
        "result = graph('Conv', [('x', 'float32', [1, 2, 3, 3])], {'w': Tensor.empty('float32', [2, 1, 3, 3])},"
        " {'group': 2, 'pads': [2**31] * 4}).run([Tensor.empty('float32', [1, 2, 3, 3])])",
        # cv sizes past the engine's limits, as Python ints too large for C
        "result = cv.pad(wnp.zeros((2, 2, 3), dtype='uint8'), 2**70, 0, 0, 0)",
        "result = cv.resize(wnp.zeros((2, 2, 3), dtype='uint8'), (2**70, 2))",
        "result = cv.letterbox(wnp.zeros((2, 2, 3), dtype='uint8'), (2**41, 2**41))",
        # LRN over an empty input (a division by zero), and with a window of 2**62 channels
        "result = graph('LRN', [('x', 'float32', [0, 2, 3])], {}, {'size': 3}).run([Tensor.empty('float32', [0, 2, 3])])",
        "result = graph('LRN', [('x', 'float32', [1, 2, 3])], {}, {'size': 2**62}).run([Tensor.empty('float32', [1, 2, 3])])",
        # Tile with 2**40 tiles, a Range with a zero step
        "result = graph('Tile', [('x', 'float32', [1, 1])], {'r': const([2**20, 2**20], 'int64')}, {})"
        ".run([Tensor.empty('float32', [1, 1])])",
        "result = graph('Range', [], {'a': const(0, 'int64'), 'b': const(5, 'int64'), 'c': const(0, 'int64')}, {}).run([])",
        # Gather index out of range (constant), ConstantOfShape with an empty value
        "result = graph('Gather', [('x', 'float32', [3])], {'i': const([3], 'int64')}, {}).run([Tensor.empty('float32', [3])])",
        "result = graph('ConstantOfShape', [], {'s': const([2], 'int64')}, {'value': Tensor.empty('float32', [0])}).run([])",
        # a graph input whose shape wraps
        "result = graph('Relu', [('x', 'float32', [2**32, 2**32])], {}, {}).run([Tensor.empty('float32', [1])])",
    ],
)
def test_crafted_models_are_refused(device: Device, code: str) -> None:
    assert run_graph(device, code) is None


def test_a_forced_choice_must_be_one_of_the_ops_candidates(device: Device) -> None:
    code = """
        g = {"inputs": [("a", "float32", [4, 8])], "outputs": ["y"],
             "constants": {"b": Tensor.empty("float32", [8, 4])},
             "nodes": [("MatMul", "mm", ["a", "b"], ["y"], {})]}
        sig = _core.Model(g, tune=False).plan()[0]["signature"]
        result = [_core.Model(g, tune=False, forced={sig: c}).run([Tensor.empty("float32", [4, 8])])
                  for c in ("gemm:scalar:0", "winograd:avx512:999")]
    """
    reply = device.run(code)
    assert (
        not reply["ok"]
        and reply["type"] in ("ValueError", "ModelError")
        and "not a candidate" in reply["message"]
    )


def test_a_gather_index_out_of_range_at_run_time_is_refused(device: Device) -> None:
    code = """
        m = graph('Gather', [('x', 'float32', [3]), ('i', 'int64', [2])], {}, {})
        result = m.run([Tensor.empty('float32', [3]), const([0, 2**40], 'int64')])
    """
    assert run_graph(device, code) is None


def test_tensors_expose_no_address(device: Device) -> None:
    reply = device.run("t = Tensor.empty('float32', [4])\nresult = t.data_ptr")
    assert not reply["ok"] and reply["type"] == "AttributeError"
    v = refused_or(
        device.run(
            "t = Tensor.empty('float32', [4])\nresult = [_core.view(t, 2, [2]).offset_in(t), t.offset_in(_core.view(t, 2, [2]))]"
        )
    )
    assert v == [8, None]


@SETTINGS
@given(
    values=st.lists(
        st.one_of(
            st.floats(allow_nan=True, allow_infinity=True),
            st.sampled_from([2.0**31, -(2.0**31) - 1, 2.0**63, -(2.0**63), 255.9, 256.0, -1.5]),
        ),
        min_size=1,
        max_size=8,
    ),
    dtype=st.sampled_from(["int32", "int64", "uint8"]),
)
def test_float_to_integer_casts_are_defined_for_every_value(
    device: Device, values: list[float], dtype: str
) -> None:
    """Out-of-range float to int conversions are undefined in C++: the engine spells out
    numpy's x86-64 results (the type's minimum; uint8 through int32) instead."""
    listed = repr(values).replace("nan", "float('nan')").replace("inf", "float('inf')")
    for code in (
        f"result = ops.cast(const({listed}, 'float32'), {dtype!r})",
        f"result = ops.cast(const({listed}, 'float32'), {dtype!r}, reference=True)",
        f"result = wnp.asarray(np.array({listed}, dtype=np.float64), dtype={dtype!r})",
    ):
        v = refused_or(device.run(code))
        assert v is not None
        with np.errstate(invalid="ignore", over="ignore"):
            src = np.array(values, dtype=np.float64 if "asarray" in code else np.float32)
            if dtype == "uint8":
                want = np.where(np.abs(src) < 2**31, src, 0).astype(np.int32).astype(np.uint8)
            else:
                info = np.iinfo(dtype)
                inside = (src >= info.min) & (src < float(info.max) + 1)
                want = np.where(inside, np.where(inside, src, 0).astype(dtype), info.min)
        assert v["values"] == want.astype(np.float64).tolist(), (code, values)


def test_a_raster_fill_that_is_not_an_integer_fills_with_numpys_value(device: Device) -> None:
    for fill, want in (("float('nan')", -(2**31)), ("1e300", -(2**31)), ("-7.9", -7)):
        code = f"result = ops.raster([const([1], 'int32')], [], [2], fill={fill})"
        v = refused_or(device.run(code))
        assert v is not None and v["values"] == [want, want], (fill, v)


def test_float_attributes_that_are_not_integers_are_refused(device: Device) -> None:
    for value in ("float('nan')", "1e30", "-float('inf')"):
        code = f"""
            m = graph('Flatten', [('x', 'float32', [2, 3])], {{}}, {{'axis': {value}}})
            result = m.run([Tensor.empty('float32', [2, 3])])
        """
        assert run_graph(device, code) is None, value
    code = """
        m = graph('Reshape', [('x', 'float32', [2, 3])], {'s': const([float('nan'), 3.0], 'float32')}, {})
        result = m.run([Tensor.empty('float32', [2, 3])])
    """
    assert run_graph(device, code) is None
