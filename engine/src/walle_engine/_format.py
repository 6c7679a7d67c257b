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
import os
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from walle_engine import _core
from walle_engine._core import Tensor
from walle_engine._errors import ModelError

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


MAX_HEADER = 64 << 20  # bytes of JSON header
MAX_RANK = 8  # of a stored tensor or graph input
MAX_ENTRIES = 1 << 20  # of any list in the header
MAX_NAME = 4096  # characters of a name
_PREFIX = 20  # magic, version, header length


def _fail(path: object, what: str) -> ModelError:
    return ModelError(f"{path}: {what}")


def _is_int(x: object) -> bool:
    return type(x) is int  # not bool


class _Checker:
    """Validates the JSON header of one file; every refusal names the field."""

    def __init__(self, path: object) -> None:
        self.path = path

    def fail(self, what: str) -> ModelError:
        return _fail(self.path, what)

    def list(self, x: object, what: str, length: int | None = None) -> list[Any]:
        if type(x) is not list:
            raise self.fail(f"{what} must be a list, got {type(x).__name__}")
        if len(x) > MAX_ENTRIES:
            raise self.fail(f"{what} has {len(x)} entries (at most {MAX_ENTRIES})")
        if length is not None and len(x) != length:
            raise self.fail(f"{what} must have {length} entries, got {len(x)}")
        return x

    def name(self, x: object, what: str) -> str:
        if type(x) is not str:
            raise self.fail(f"{what} must be a string, got {type(x).__name__}")
        if len(x) > MAX_NAME:
            raise self.fail(f"{what} is {len(x)} characters long (at most {MAX_NAME})")
        return x

    def dtype(self, x: object, what: str) -> str:
        if type(x) is not str or x not in _FORMATS:
            shown = repr(x)[:64]
            raise self.fail(f"{what} has dtype {shown}; known: {', '.join(_FORMATS)}")
        return x

    def shape(self, x: object, what: str) -> list[int]:
        dims = self.list(x, f"{what} shape")
        if len(dims) > MAX_RANK:
            raise self.fail(f"{what} has rank {len(dims)} (at most {MAX_RANK})")
        for d in dims:
            if not _is_int(d) or d < 0:
                raise self.fail(f"{what} has dimension {repr(d)[:64]}: must be an integer >= 0")
        return dims

    def nbytes(self, dtype: str, shape: list[int], what: str) -> int:
        n = _FORMATS[dtype][1]
        limit = _core.model_limits()[1]
        for d in shape:
            n *= d  # Python ints do not overflow; stop once past the limit
            if n > limit:
                break
        if n > limit:
            raise MemoryError(
                f"{self.path}: {what} of shape {tuple(shape)} exceeds the per-value limit of "
                f"{limit} bytes (walle_engine.set_model_limits)"
            )
        return n

    def attr(self, v: object, what: str, constants: Mapping[str, Any]) -> None:
        if type(v) in (int, float, str, bool):
            if type(v) is str:
                self.name(v, what)
            return
        if type(v) is list:
            items = self.list(v, what)
            if not all(type(x) in (int, float, bool) for x in items):
                raise self.fail(f"{what} must be a list of numbers")
            return
        if type(v) is dict:
            ref = v.get("tensor")
            if len(v) != 1 or type(ref) is not str or ref not in constants:
                raise self.fail(f'{what} must be {{"tensor": name of a constant}}')
            return
        raise self.fail(f"{what} has unsupported type {type(v).__name__}")


class ModelFile:
    """A parsed model file whose constants are zero-copy views of a read-only mmap.

    Every header field and offset is validated before use: a malformed or hostile file is
    refused with ``ModelError`` (or ``MemoryError`` past the size limits) naming the
    problem; it never reads outside the file."""

    def __init__(self, path: str | Path) -> None:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < _PREFIX:
                raise _fail(path, f"truncated: {size} bytes, not a walle_engine model")
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        view = memoryview(self._map)
        if bytes(view[:8]) != MAGIC:
            raise _fail(path, "not a walle_engine model: convert it with walle_engine.convert")
        version, head_len = struct.unpack("<IQ", view[8:_PREFIX])
        if version != VERSION:
            raise _fail(path, f"format version {version}; this engine reads {VERSION}")
        if head_len > MAX_HEADER:
            raise _fail(path, f"header length {head_len} exceeds {MAX_HEADER} bytes")
        if _PREFIX + head_len > size:
            raise _fail(path, f"truncated: header of {head_len} bytes, file of {size}")
        try:
            header = json.loads(bytes(view[_PREFIX : _PREFIX + head_len]))
        except (ValueError, RecursionError) as e:
            raise _fail(path, f"header is not valid JSON ({str(e)[:200]})") from None
        c = _Checker(path)
        if type(header) is not dict:
            raise c.fail("header must be a JSON object")
        for key in ("inputs", "outputs", "nodes", "constants"):
            if key not in header:
                raise c.fail(f"header has no {key!r}")
        if header.get("format", VERSION) != VERSION:
            raise c.fail(f"header format {repr(header.get('format'))[:32]} is not {VERSION}")
        if type(header.get("metadata", {})) is not dict:
            raise c.fail("header 'metadata' must be an object")
        self.header: dict[str, Any] = header
        base = _PREFIX + head_len + _pad(_PREFIX + head_len)
        total_limit = _core.model_limits()[0]
        names: set[str] = set()
        for i, entry in enumerate(c.list(header["inputs"], "inputs")):
            name, dtype, shape = c.list(entry, f"inputs[{i}]", 3)
            c.name(name, f"inputs[{i}] name")
            if name in names:
                raise c.fail(f"input {name!r} is defined twice")
            names.add(name)
            c.dtype(dtype, f"input {name!r}")
            c.nbytes(dtype, c.shape(shape, f"input {name!r}"), f"input {name!r}")
        for i, name in enumerate(c.list(header["outputs"], "outputs")):
            c.name(name, f"outputs[{i}]")
        self.constants: dict[str, Tensor] = {}
        total = 0
        for i, entry in enumerate(c.list(header["constants"], "constants")):
            name, dtype, shape, offset, nbytes = c.list(entry, f"constants[{i}]", 5)
            c.name(name, f"constants[{i}] name")
            what = f"constant {name!r}"
            if name in names:
                raise c.fail(f"{what} is defined twice")
            names.add(name)
            fmt, _ = _FORMATS[c.dtype(dtype, what)]
            shape = c.shape(shape, what)
            expect = c.nbytes(dtype, shape, what)
            if not _is_int(offset) or not _is_int(nbytes) or offset < 0 or nbytes < 0:
                raise c.fail(f"{what} has offset {offset!r:.32} and length {nbytes!r:.32}")
            if nbytes != expect:
                raise c.fail(
                    f"{what} has {nbytes} bytes; shape {tuple(shape)} of {dtype} needs {expect}"
                )
            if offset % ALIGN:
                raise c.fail(f"{what} is at offset {offset}, not {ALIGN}-byte aligned")
            if base + offset + nbytes > size:
                raise c.fail(
                    f"{what} ({nbytes} bytes at offset {offset}) lies outside the "
                    f"file ({size} bytes)"
                )
            total += nbytes
            if total > total_limit:
                raise MemoryError(
                    f"{path}: constants exceed the per-model limit of {total_limit} bytes "
                    "(walle_engine.set_model_limits)"
                )
            raw = view[base + offset : base + offset + nbytes]
            if dtype == "bool" and raw.tobytes().translate(None, b"\0\1"):
                raise c.fail(f"{what} is bool but holds bytes other than 0 and 1")
            if expect == 0 or len(shape) == 0:
                # memoryview.cast cannot express 0-d or empty views; these are tiny.
                t = Tensor.empty(dtype, shape)
                if expect:
                    memoryview(t).cast("B")[:] = raw
                self.constants[name] = t
                continue
            self.constants[name] = Tensor(raw.cast(fmt, shape))
        for i, entry in enumerate(c.list(header["nodes"], "nodes")):
            op, name, ins, outs, attrs = c.list(entry, f"nodes[{i}]", 5)
            c.name(op, f"nodes[{i}] op")
            c.name(name, f"nodes[{i}] name")
            for j, x in enumerate(c.list(ins, f"node {name!r} inputs")):
                c.name(x, f"node {name!r} input {j}")
            for j, x in enumerate(c.list(outs, f"node {name!r} outputs")):
                c.name(x, f"node {name!r} output {j}")
            if type(attrs) is not dict:
                raise c.fail(f"node {name!r} attributes must be an object")
            if len(attrs) > MAX_ENTRIES:
                raise c.fail(f"node {name!r} has too many attributes")
            for k, v in attrs.items():
                c.name(k, f"node {name!r} attribute name")
                c.attr(v, f"node {name!r} attribute {k!r}", self.constants)

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
