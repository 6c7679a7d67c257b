"""The converted model file: compact, memory-mappable, readable without onnx.

Layout (little-endian)::

    8 bytes   magic  b"WALLEMDL"
    4 bytes   format version (uint32)
    8 bytes   header length H (uint64)
    H bytes   JSON header: inputs, outputs, nodes, constants (name, dtype, shape, offset)
    padding   to a 64-byte boundary
    blob      constant data, each tensor 64-byte aligned (AVX-512 loads, zero-copy mmap)

Node attributes are JSON values; tensor-valued attributes refer to a constant by name
(``{"tensor": name}``).
"""

from __future__ import annotations

import json
import mmap
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from walle_engine._core import Tensor

MAGIC = b"WALLEMDL"
VERSION = 1
ALIGN = 64
_FORMATS = {
    "float32": ("f", 4),
    "int32": ("i", 4),
    "int64": ("q", 8),
    "bool": ("?", 1),
    "uint8": ("B", 1),
}


def _pad(n: int) -> int:
    return (-n) % ALIGN


def write_model(
    path: str | Path,
    *,
    inputs: Sequence[tuple[str, str, Sequence[int]]],
    outputs: Sequence[str],
    nodes: Sequence[tuple[str, str, Sequence[str], Sequence[str], Mapping[str, Any]]],
    constants: Mapping[str, tuple[str, Sequence[int], bytes]],
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Write a model; ``constants`` maps name -> (dtype, shape, raw little-endian bytes)."""
    table = []
    offset = 0
    blobs = []
    for name, (dtype, shape, raw) in constants.items():
        if dtype not in _FORMATS:
            raise ValueError(f"constant {name!r} has unsupported dtype {dtype}")
        table.append([name, dtype, list(shape), offset, len(raw)])
        blobs.append(raw)
        offset += len(raw) + _pad(len(raw))
    header = {
        "format": VERSION,
        "metadata": dict(metadata or {}),
        "inputs": [[n, d, list(s)] for n, d, s in inputs],
        "outputs": list(outputs),
        "nodes": [[op, name, list(i), list(o), dict(a)] for op, name, i, o, a in nodes],
        "constants": table,
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    prefix = MAGIC + struct.pack("<IQ", VERSION, len(head)) + head
    with open(path, "wb") as f:
        f.write(prefix + b"\0" * _pad(len(prefix)))
        for raw in blobs:
            f.write(raw + b"\0" * _pad(len(raw)))


class ModelFile:
    """A parsed model file whose constants are zero-copy views of a read-only mmap."""

    def __init__(self, path: str | Path) -> None:
        with open(path, "rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        view = memoryview(self._map)
        if bytes(view[:8]) != MAGIC:
            raise ValueError(
                f"{path} is not a walle_engine model: convert it with walle_engine.convert"
            )
        version, head_len = struct.unpack("<IQ", view[8:20])
        if version != VERSION:
            raise ValueError(f"{path} has format version {version}; this engine reads {VERSION}")
        self.header: dict[str, Any] = json.loads(bytes(view[20 : 20 + head_len]))
        base = 20 + head_len + _pad(20 + head_len)
        self.constants: dict[str, Tensor] = {}
        for name, dtype, shape, offset, nbytes in self.header["constants"]:
            fmt, _ = _FORMATS[dtype]
            count = 1
            for d in shape:
                count *= d
            if count == 0 or len(shape) == 0:
                # memoryview.cast cannot express 0-d or empty views; these are tiny.
                t = Tensor.empty(dtype, shape)
                if count:
                    memoryview(t).cast("B")[:] = view[base + offset : base + offset + nbytes]
                self.constants[name] = t
                continue
            mv = view[base + offset : base + offset + nbytes].cast(fmt, shape)
            self.constants[name] = Tensor(mv)

    def graph(self) -> dict[str, Any]:
        """The dict ``_core.Model`` builds from."""
        h = self.header
        nodes = []
        for op, name, ins, outs, attrs in h["nodes"]:
            conv = {}
            for k, v in attrs.items():
                conv[k] = self.constants[v["tensor"]] if isinstance(v, dict) else v
            nodes.append((op, name, ins, outs, conv))
        return {
            "inputs": [(n, d, s) for n, d, s in h["inputs"]],
            "outputs": h["outputs"],
            "constants": self.constants,
            "nodes": nodes,
        }
