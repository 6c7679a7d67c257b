"""Fuzz target: tensor creation from shapes and buffers (Tensor, walle_engine.np)."""

from __future__ import annotations

import os
import sys

import atheris

with atheris.instrument_imports():
    import walle_engine as we
    from walle_engine import _core

sys.path.insert(0, os.path.dirname(__file__))
from _common import REFUSALS, small_limits

DTYPES = ["float32", "int32", "int64", "bool", "uint8", "float64", "int8"]
# Dimensions near the interesting edges: zero, small, and products that wrap.
EDGES = [0, 1, 2, 3, 7, -1, 2**31 - 1, 2**31, 2**32 + 1, 2**62, 2**63 - 1, -(2**63)]


def shape(fdp: atheris.FuzzedDataProvider) -> list[int]:
    dims = []
    for _ in range(fdp.ConsumeIntInRange(0, 9)):
        if fdp.ConsumeBool():
            dims.append(fdp.PickValueInList(EDGES))
        else:
            dims.append(fdp.ConsumeIntInRange(0, 6))
    return dims


def one(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    dtype = fdp.PickValueInList(DTYPES)
    s = shape(fdp)
    try:
        kind = fdp.ConsumeIntInRange(0, 5)
        if kind == 0:
            t = _core.Tensor.empty(dtype, s)
            mv = memoryview(t).cast("B")
            if len(mv):
                mv[-1] = mv[0]
        elif kind == 1:
            a = we.np.zeros(s, dtype=dtype)
            a.reshape(-1)
        elif kind == 2:
            a = we.np.full(s, fdp.ConsumeInt(8), dtype=dtype)
            a.sum()
        elif kind == 3:
            raw = bytearray(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 256)))
            t = _core.Tensor(raw)
            a = we.np.asarray(t).astype(dtype)
            a.reshape(s)
        elif kind == 4:
            a = we.np.arange(fdp.ConsumeIntInRange(-5, 64), dtype=dtype)
            a.reshape(s).copy()
        else:
            a = we.np.ones(s[:3], dtype=dtype)
            b = we.np.broadcast_to(a, s)
            b.copy()
    except REFUSALS:
        pass


def main() -> None:
    small_limits()
    atheris.Setup(sys.argv, one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
