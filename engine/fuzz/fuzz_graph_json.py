"""Fuzz target: a graph as JSON text, built straight into the engine (no file layer), so
mutations reach the C++ loader's structure checks and the op decompositions.

The JSON: {"inputs": [[name, dtype, shape]], "outputs": [...], "nodes": [[op, name, ins,
outs, attrs]], "constants": {name: [dtype, shape, [values]]}}.
"""

from __future__ import annotations

import json
import os
import sys

import atheris

with atheris.instrument_imports():
    import walle_engine as we
    from walle_engine import _core

sys.path.insert(0, os.path.dirname(__file__))
from _common import REFUSALS, small_limits


def build(data: bytes) -> None:
    try:
        g = json.loads(data)
    except (ValueError, RecursionError):
        return
    if not isinstance(g, dict):
        return
    try:
        consts = {}
        for name, (dtype, shape, values) in dict(g.get("constants", {})).items():
            n = 1
            for d in shape:
                n *= int(d)
            if not 0 <= n <= 4096 or len(values) != n:
                continue
            consts[name] = we.np.asarray(values, dtype=dtype).reshape(shape).tensor
        graph = {
            "inputs": g.get("inputs", []),
            "outputs": g.get("outputs", []),
            "constants": consts,
            "nodes": [tuple(n) for n in g.get("nodes", [])],
        }
        model = we.Model(_core.Model(graph, tune=False))
        model.run({i.name: we.np.ones(i.shape, dtype=i.dtype) for i in model.inputs})
    except REFUSALS:
        pass


def main() -> None:
    small_limits()
    atheris.Setup(sys.argv, build)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
