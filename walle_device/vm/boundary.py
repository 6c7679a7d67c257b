"""The host side of the guest boundary: everything a run hands back is checked here, on the
host, whatever the guest claims to have checked already.

A run's result arrives as marshal bytes from a task interpreter or a worker process. Both
are treated as untrusted: a task that broke the guest (or a compromised worker process)
could send any marshal data. So the host decodes it, rebuilds it from exact builtin types
only, caps output, uploads and logs on their *expanded* size (marshal back-references let
half a megabyte stand for a gigabyte of JSON), checks every field's type, and imports
returned tensors only under the run's own owner token, with their byte size equal to
product(shape) × itemsize and within the run's memory budget. Anything malformed turns
into a failed run (`InvalidResult`) and a fresh interpreter; nothing here raises.
"""

from __future__ import annotations

import marshal
import math
from dataclasses import dataclass
from typing import Any

from . import guest
from .result import TRACEBACK_MAX_CHARS

MESSAGE_MAX_CHARS = 4000
ERROR_TYPE_MAX_CHARS = 200
TENSOR_MAX_RANK = 8
MAX_DIM = (1 << 31) - 1
MAX_EXTENT = 1 << 48
DTYPE_SIZES = {"float32": 4, "int32": 4, "int64": 8, "bool": 1, "uint8": 1}
BUDGET_ERRORS = ("TaskTimeout", "MemoryBudgetExceeded")


class InvalidResult(ValueError):
    """The guest handed back something the host does not accept."""


@dataclass(frozen=True)
class Limits:
    """The caps one run's result must fit, applied on the host."""

    state_bytes: int
    tensor_bytes: int
    output_bytes: int = guest.OUTPUT_MAX_BYTES
    upload_bytes: int = guest.UPLOAD_MAX_BYTES
    log_lines: int = guest.LOG_MAX_LINES + 1  # + the "n lines dropped" line
    log_chars: int = guest.LOG_MAX_CHARS + 16

    @property
    def wire_bytes(self) -> int:
        """Most marshal bytes a valid result can take (tensor bytes in the process backend
        travel inside it); more is refused before decoding."""
        logs = self.log_lines * (self.log_chars * 4 + 8)
        return (
            self.output_bytes
            + self.upload_bytes
            + self.state_bytes
            + self.tensor_bytes
            + logs
            + (1 << 20)
        )


def accept_report(data: Any) -> dict[str, Any]:
    """A worker process's start report (what its OS wall applied): plain data, small."""
    try:
        report = guest.plain(marshal.loads(data), "worker report", 1 << 16)
    except (ValueError, EOFError, TypeError):
        report = None
    return report if type(report) is dict else {"invalid": True}


def failure(error_type: str, message: str, *, recycle: bool = True) -> dict[str, Any]:
    return {
        "ok": False,
        "error_type": error_type,
        "message": message,
        "traceback": "",
        "recycle": recycle,
    }


def accept(data: Any, limits: Limits) -> dict[str, Any]:
    """Decode and check one run's result; a clean dict, or a failure for a bad one."""
    raw: Any = None
    try:
        if type(data) is not bytes:
            raise InvalidResult(f"result is {type(data).__name__}, not bytes")
        if len(data) > limits.wire_bytes:
            raise InvalidResult(f"result is {len(data)} bytes, over {limits.wire_bytes}")
        try:
            raw = marshal.loads(data)
        except (ValueError, EOFError, TypeError) as e:
            raise InvalidResult(f"result does not decode: {e}") from None
        return _check(raw, limits)
    except (InvalidResult, TypeError, ValueError, RecursionError) as e:
        out = failure(
            "InvalidResult",
            f"the task's run handed back an invalid result ({e}); its interpreter is replaced",
        )
        # Handles it listed are dropped (under the run's owner token), never imported.
        tensors = raw.get("tensors") if type(raw) is dict else None
        if type(tensors) is dict:
            out["tensors"] = {k: h for k, h in tensors.items() if type(h) is int}
        return out


def _text(raw: dict[str, Any], key: str, limit: int, default: str = "") -> str:
    value = raw.get(key, default)
    if type(value) is not str:
        raise InvalidResult(f"{key} is {type(value).__name__}, not str")
    return value[:limit]


def _check(raw: Any, limits: Limits) -> dict[str, Any]:
    if type(raw) is not dict:
        raise InvalidResult(f"result is {type(raw).__name__}, not a dict")
    ok = raw.get("ok")
    if type(ok) is not bool:
        raise InvalidResult("ok is not a bool")
    out: dict[str, Any] = {"ok": ok}
    logs = raw.get("logs", [])
    if type(logs) is not list or len(logs) > limits.log_lines:
        raise InvalidResult(f"logs must be a list of at most {limits.log_lines} lines")
    for line in logs:
        if type(line) is not str:
            raise InvalidResult("log lines must be str")
    out["logs"] = [line[: limits.log_chars] for line in logs]
    for key in ("guest_ms", "guest_start"):
        value = raw.get(key)
        if type(value) in (int, float) and math.isfinite(value):
            out[key] = float(value)
    peak = raw.get("engine_peak_bytes")
    if peak is not None:
        if type(peak) is not int or peak < 0:
            raise InvalidResult("engine_peak_bytes must be a non-negative int")
        out["engine_peak_bytes"] = peak
    if raw.get("recycle") is True:
        out["recycle"] = True
    if not ok:
        out["error_type"] = _text(raw, "error_type", ERROR_TYPE_MAX_CHARS, "Error") or "Error"
        out["message"] = _text(raw, "message", MESSAGE_MAX_CHARS)
        out["traceback"] = _text(raw, "traceback", TRACEBACK_MAX_CHARS * 2)
        budget = raw.get("budget")
        if budget is not None:
            if budget not in BUDGET_ERRORS:
                raise InvalidResult(f"unknown budget {budget!r}")
            out["budget"] = budget
        out["tensors"] = _tensors(raw.get("tensors"))  # to be dropped, never imported
        return out
    out["output"] = guest.plain(raw.get("output"), "run(ctx) return value", limits.output_bytes)
    uploads = raw.get("uploads", [])
    if type(uploads) is not list:
        raise InvalidResult("uploads must be a list")
    out["uploads"] = guest.plain(uploads, "ctx.upload() payloads", limits.upload_bytes)
    out["state"] = _state_delta(raw.get("state"), limits)
    out["tensors"] = _tensors(raw.get("tensors"))
    return out


def _state_delta(delta: Any, limits: Limits) -> dict[str, Any]:
    if delta is None:
        return {"set": {}, "del": []}
    if type(delta) is not dict:
        raise InvalidResult("state delta must be a dict")
    sets, dels = delta.get("set", {}), delta.get("del", [])
    if type(sets) is not dict or type(dels) is not list:
        raise InvalidResult("state delta must hold a dict 'set' and a list 'del'")
    clean: dict[str, tuple[Any, float | None]] = {}
    for key, item in sets.items():
        if type(key) is not str or not key or len(key) > 256:
            raise InvalidResult("state keys must be non-empty str of at most 256 characters")
        if type(item) is not tuple or len(item) != 2:
            raise InvalidResult("state entries must be (value, expires_at)")
        value, expires = item
        if expires is not None and (
            type(expires) not in (int, float) or not math.isfinite(expires)
        ):
            raise InvalidResult("state expiry must be a finite number or None")
        clean[key] = (guest.plain(value, f"ctx.state[{key!r}]", limits.state_bytes), expires)
    for key in dels:
        if type(key) is not str:
            raise InvalidResult("deleted state keys must be str")
    return {"set": clean, "del": list(dels)}


def _tensors(items: Any) -> dict[str, Any]:
    if items is None:
        return {}
    if type(items) is not dict or len(items) > guest.TENSORS_MAX:
        raise InvalidResult(f"tensors must be a dict of at most {guest.TENSORS_MAX}")
    for name, item in items.items():
        if type(name) is not str:
            raise InvalidResult("tensor names must be str")
        if type(item) is not int and type(item) is not tuple:
            raise InvalidResult("a tensor must be a handle or (dtype, shape, bytes)")
    return items


def check_tensor_bytes(dtype: Any, shape: Any, data: Any) -> tuple[str, tuple[int, ...], int]:
    """Validate a process worker's (dtype, shape, bytes): known dtype, sane rank, every
    dimension a non-negative int, and len(bytes) == product(shape) × itemsize exactly."""
    if type(dtype) is not str or dtype not in DTYPE_SIZES:
        raise InvalidResult(f"unknown tensor dtype {dtype!r}")
    if type(shape) not in (tuple, list) or len(shape) > TENSOR_MAX_RANK:
        raise InvalidResult(f"tensor shape must be a tuple of at most {TENSOR_MAX_RANK} ints")
    if not all(type(d) is int and 0 <= d <= MAX_DIM for d in shape):
        raise InvalidResult(f"tensor dimensions must be ints in [0, {MAX_DIM}]")
    if math.prod(max(d, 1) for d in shape) * DTYPE_SIZES[dtype] > MAX_EXTENT:
        # Even an empty tensor: its strides would not fit the engine's arithmetic.
        raise InvalidResult(f"tensor shape {tuple(shape)} spans more than {MAX_EXTENT} bytes")
    if type(data) is not bytes:
        raise InvalidResult("tensor data must be bytes")
    count = math.prod(shape)  # Python ints: no overflow
    if count * DTYPE_SIZES[dtype] != len(data):
        raise InvalidResult(
            f"tensor of shape {tuple(shape)} and dtype {dtype} needs "
            f"{count * DTYPE_SIZES[dtype]} bytes, got {len(data)}"
        )
    return dtype, tuple(shape), count


def import_tensors(exported: dict[str, Any], owner: int, cap: int) -> dict[str, Any]:
    """The run's returned tensors as walle_engine.np arrays: handles exported under this
    run's owner token (the same memory), or checked (dtype, shape, bytes) from a worker
    process. Raises InvalidResult after freeing whatever it had taken."""
    if not exported:
        return {}
    from walle_engine import _core
    from walle_engine import np as wnp

    out: dict[str, Any] = {}
    total = 0
    pending = dict(exported)
    try:
        for name, item in exported.items():
            del pending[name]
            if type(item) is int:
                try:
                    t = _core.import_tensor(item, owner)
                except (RuntimeError, ValueError, TypeError, OverflowError) as e:
                    raise InvalidResult(f"tensor {name!r}: {e}") from None
                total += math.prod(t.shape) * DTYPE_SIZES.get(t.dtype, 8)
                array = wnp.asarray(t)
            else:
                if len(item) != 3:
                    raise InvalidResult(f"tensor {name!r} must be (dtype, shape, bytes)")
                dtype, shape, count = check_tensor_bytes(*item)
                total += len(item[2])
                if total > cap:
                    break
                flat = _core.Tensor.empty(dtype, [count])
                if count:
                    memoryview(flat).cast("B")[:] = item[2]
                array = wnp.asarray(flat).reshape(shape)
            if total > cap:
                break
            out[name] = array
        if total > cap:
            raise InvalidResult(f"returned tensors hold over {cap} bytes (config max_memory_mb)")
        return out
    except BaseException:
        drop_tensors(pending, owner)
        raise


def drop_tensors(exported: dict[str, Any] | None, owner: int) -> None:
    """Free handles the host will never import (a failed or refused run)."""
    handles = [h for h in (exported or {}).values() if type(h) is int]
    if not handles:
        return
    try:
        from walle_engine import _core
    except ImportError:  # pragma: no cover - a handle implies the engine is there
        return
    for h in handles:
        try:
            _core.drop_exported(h, owner)
        except (OverflowError, TypeError, ValueError):
            pass
