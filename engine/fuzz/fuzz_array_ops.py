"""Fuzz target: walle_engine.np array operations on small arrays with edge values
(integer extremes, NaN), edge axes and edge shapes."""

from __future__ import annotations

import os
import sys

import atheris

with atheris.instrument_imports():
    import walle_engine as we

sys.path.insert(0, os.path.dirname(__file__))
from _common import REFUSALS, small_limits

np = we.np
DTYPES = ["float32", "int32", "int64", "bool", "uint8"]
VALUES = [0, 1, -1, 2, 7, 2**31 - 1, -(2**31), 2**63 - 1, -(2**63), 255, float("nan"), 1e30]
BINARY = [
    "add",
    "subtract",
    "multiply",
    "divide",
    "floor_divide",
    "mod",
    "maximum",
    "minimum",
    "power",
    "equal",
    "less",
    "logical_and",
    "logical_xor",
    "where_",
    "matmul",
]
UNARY = [
    "negative",
    "abs",
    "sqrt",
    "exp",
    "sum",
    "mean",
    "max",
    "argmax",
    "sort",
    "transpose",
    "squeeze",
    "expand_dims",
    "clip",
    "astype",
]


def array(fdp: atheris.FuzzedDataProvider, dtype: str):
    shape = [fdp.ConsumeIntInRange(0, 4) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    n = 1
    for d in shape:
        n *= d
    vals = [fdp.PickValueInList(VALUES) for _ in range(n)]
    try:
        return (
            np.asarray(vals, dtype="float64" if dtype == "float32" else "int64")
            .astype(dtype)
            .reshape(shape)
        )
    except REFUSALS:
        return np.zeros(shape, dtype=dtype)


def one(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    dtype = fdp.PickValueInList(DTYPES)
    a = array(fdp, dtype)
    b = array(fdp, fdp.PickValueInList(DTYPES) if fdp.ConsumeBool() else dtype)
    axis = fdp.ConsumeIntInRange(-6, 6)
    try:
        if fdp.ConsumeBool():
            op = fdp.PickValueInList(BINARY)
            if op == "where_":
                np.where(a.astype("bool"), a, b)
            else:
                getattr(np, op)(a, b)
        else:
            op = fdp.PickValueInList(UNARY)
            if op in ("sum", "mean", "max", "argmax", "sort", "squeeze"):
                getattr(np, op)(a, axis=axis)
            elif op == "expand_dims":
                np.expand_dims(a, axis)
            elif op == "transpose":
                perm = [fdp.ConsumeIntInRange(-6, 6) for _ in range(fdp.ConsumeIntInRange(0, 5))]
                np.transpose(a, perm or None)
            elif op == "clip":
                np.clip(a, fdp.PickValueInList(VALUES), fdp.PickValueInList(VALUES))
            elif op == "astype":
                a.astype(fdp.PickValueInList(DTYPES))
            else:
                getattr(np, op)(a)
        a[fdp.ConsumeIntInRange(-6, 6) :: fdp.PickValueInList([1, 2, -1, 3])]
    except REFUSALS:
        pass
    except ZeroDivisionError:
        pass


def main() -> None:
    small_limits()
    atheris.Setup(sys.argv, one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
