"""Atomic ops on tensors, for tests and experiments.

Each function runs the optimised kernels at the current SIMD level (``set_isa``), or the
scalar reference oracle with ``reference=True``. Inputs may be numpy arrays or anything
with the buffer protocol; results are ``Tensor`` objects (``numpy.asarray`` views them
without copying).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

from walle_engine import _core
from walle_engine._core import Tensor

__all__ = [
    "argmax",
    "binary",
    "cast",
    "compose_raster",
    "matmul",
    "raster",
    "reduce",
    "select",
    "tensor",
    "unary",
]

Region = tuple[int, int, int, Sequence[int], Sequence[int], Sequence[int]]


def tensor(x: object) -> Tensor:
    """Wrap a C-contiguous buffer (numpy array, array.array, memoryview) without copying."""
    return x if isinstance(x, Tensor) else Tensor(x)


def unary(
    op: str, x: object, alpha: float = 0.0, beta: float = 0.0, *, reference: bool = False
) -> Tensor:
    """Elementwise unary op (abs, exp, sigmoid, erf, affine, clip, ...)."""
    return _core.unary(op, tensor(x), alpha, beta, reference)


def binary(op: str, a: object, b: object, *, reference: bool = False) -> Tensor:
    """Elementwise binary op with numpy broadcasting (add, mul, pow, lt, and, ...)."""
    return _core.binary(op, tensor(a), tensor(b), reference)


def select(cond: object, a: object, b: object, *, reference: bool = False) -> Tensor:
    """``a`` where ``cond`` else ``b``, broadcast."""
    return _core.select(tensor(cond), tensor(a), tensor(b), reference)


def cast(x: object, dtype: str, *, reference: bool = False) -> Tensor:
    """Convert to float32, int32, int64, bool or uint8 (numpy's conversions)."""
    return _core.cast(tensor(x), dtype, reference)


def reduce(
    op: str, x: object, axes: Sequence[int], keepdims: bool = True, *, reference: bool = False
) -> Tensor:
    """Reduce (sum, mean, max, min, prod) over ``axes``."""
    return _core.reduce(op, tensor(x), list(axes), keepdims, reference)


def argmax(
    x: object,
    axis: int,
    keepdims: bool = True,
    select_last: bool = False,
    *,
    reference: bool = False,
) -> Tensor:
    """Index of the maximum along ``axis`` (int64)."""
    return _core.argmax(tensor(x), axis, keepdims, select_last, reference)


def matmul(
    a: object,
    b: object,
    trans_a: bool = False,
    trans_b: bool = False,
    variant: int = 0,
    *,
    reference: bool = False,
) -> Tensor:
    """Batched float32 matmul with broadcasting over leading dims."""
    return _core.matmul(tensor(a), tensor(b), trans_a, trans_b, variant, reference)


def raster(
    inputs: Sequence[object],
    regions: Sequence[Region],
    shape: Sequence[int],
    fill: float | None = None,
    *,
    reference: bool = False,
) -> Tensor:
    """Copy strided regions ``(input, src_offset, dst_offset, size, src_stride, dst_stride)``."""
    return _core.raster(
        [tensor(x) for x in inputs], _regions(regions), _int64s(shape), fill, reference
    )


def _int64s(values: Sequence[int]) -> list[int]:
    """Integers for the core, refused with OverflowError when C's int64 cannot hold them
    (the binding would otherwise reject the whole call with a TypeError)."""
    out = [operator.index(v) for v in values]
    for v in out:
        if not -(2**63) <= v < 2**63:
            raise OverflowError(f"{v} does not fit in a 64-bit integer")
    return out


def _regions(regions: Sequence[Region]) -> list[Region]:
    out = []
    for r in regions:
        i, so, do, size, ss, ds = r
        so, do = _int64s([so, do])
        if not 0 <= operator.index(i) < 2**31:
            raise ValueError(f"region input {i} is out of range")
        out.append((i, so, do, _int64s(size), _int64s(ss), _int64s(ds)))
    return out


def compose_raster(
    inner: Sequence[Region], inner_shape: Sequence[int], outer: Sequence[Region]
) -> list[Region] | None:
    """Merge two chained rasters into one, or None when they do not compose exactly."""
    return _core.compose_raster(_regions(inner), _int64s(inner_shape), _regions(outer))
