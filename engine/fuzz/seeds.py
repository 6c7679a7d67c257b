"""Writes the seed corpora of the fuzz targets (engine/fuzz/corpus/<target>/seed-*).

    python engine/fuzz/seeds.py

Seeds are small valid inputs that reach deep: the fuzzer mutates them. Crash reproducers
live beside them as regress-* and are never rewritten here."""

from __future__ import annotations

import json
import random
import struct
import tempfile
from pathlib import Path
from typing import Any

from walle_engine._format import write_model

CORPUS = Path(__file__).resolve().parent / "corpus"


def f32(n: int) -> list[float]:
    return [round(0.1 * (i % 7) - 0.3, 2) for i in range(n)]


# (inputs, outputs, nodes, constants as name -> (dtype, shape, values))
GRAPHS: dict[str, tuple[Any, Any, Any, Any]] = {
    "matmul_relu": (
        [["x", "float32", [1, 4]]],
        ["z"],
        [["MatMul", "mm", ["x", "w"], ["y"], {}], ["Relu", "r", ["y"], ["z"], {}]],
        {"w": ("float32", [4, 4], f32(16))},
    ),
    "conv_pool": (
        [["x", "float32", [1, 2, 6, 6]]],
        ["z"],
        [
            ["Conv", "c", ["x", "w", "b"], ["y"], {"pads": [1, 1, 1, 1], "strides": [1, 1]}],
            ["MaxPool", "p", ["y"], ["z"], {"kernel_shape": [2, 2], "strides": [2, 2]}],
        ],
        {"w": ("float32", [3, 2, 3, 3], f32(54)), "b": ("float32", [3], f32(3))},
    ),
    "shapes": (
        [["x", "float32", [2, 3, 4]]],
        ["z"],
        [
            ["Reshape", "r", ["x", "s"], ["y"], {}],
            ["Transpose", "t", ["y"], ["y2"], {"perm": [1, 0]}],
            ["Concat", "c", ["y2", "y2"], ["y3"], {"axis": 0}],
            ["Slice", "sl", ["y3", "st", "en"], ["z"], {}],
        ],
        {
            "s": ("int64", [2], [6, 4]),
            "st": ("int64", [1], [1]),
            "en": ("int64", [1], [7]),
        },
    ),
    "int_ops": (
        [["x", "int32", [4]]],
        ["z"],
        [
            ["Add", "a", ["x", "k"], ["y"], {}],
            ["Mul", "m", ["y", "k"], ["y2"], {}],
            ["Neg", "n", ["y2"], ["y3"], {}],
            ["Abs", "ab", ["y3"], ["z"], {}],
        ],
        {"k": ("int32", [4], [2**31 - 1, -(2**31), 7, -1])},
    ),
    "gather_softmax": (
        [["x", "float32", [5, 3]]],
        ["z"],
        [
            ["Gather", "g", ["x", "i"], ["y"], {"axis": 0}],
            ["Softmax", "s", ["y"], ["z"], {"axis": -1}],
        ],
        {"i": ("int64", [2], [4, -1])},
    ),
    "folded": (
        [["x", "float32", [2, 2]]],
        ["z"],
        [
            ["ConstantOfShape", "c", ["s"], ["y"], {}],
            ["Range", "r", ["a", "b", "d"], ["y2"], {}],
            ["Tile", "t", ["x", "rep"], ["y3"], {}],
            ["Add", "z", ["y3", "y"], ["z"], {}],
        ],
        {
            "s": ("int64", [2], [4, 2]),
            "a": ("int64", [], [0]),
            "b": ("int64", [], [4]),
            "d": ("int64", [], [1]),
            "rep": ("int64", [2], [2, 1]),
        },
    ),
}

_PACK = {"float32": "f", "int32": "i", "int64": "q", "bool": "?", "uint8": "B"}


def raw(dtype: str, values: list[Any]) -> bytes:
    return struct.pack(f"<{len(values)}{_PACK[dtype]}", *values)


def main() -> None:
    for target in ("model_file", "graph_json", "tensor", "array_ops"):
        (CORPUS / target).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, (inputs, outputs, nodes, consts) in GRAPHS.items():
            path = Path(tmp) / "m.walle"
            write_model(
                path,
                inputs=[tuple(i) for i in inputs],
                outputs=outputs,
                nodes=[tuple(n) for n in nodes],
                constants={k: (d, s, raw(d, v)) for k, (d, s, v) in consts.items()},
            )
            (CORPUS / "model_file" / f"seed-{name}").write_bytes(path.read_bytes())
            graph = {
                "inputs": inputs,
                "outputs": outputs,
                "nodes": nodes,
                "constants": {k: [d, s, v] for k, (d, s, v) in consts.items()},
            }
            (CORPUS / "graph_json" / f"seed-{name}").write_text(json.dumps(graph))
    rng = random.Random(7)
    for target in ("tensor", "array_ops"):
        for i in range(8):
            data = bytes(rng.randrange(256) for _ in range(rng.choice([8, 32, 128])))
            (CORPUS / target / f"seed-{i}").write_bytes(data)


if __name__ == "__main__":
    main()
