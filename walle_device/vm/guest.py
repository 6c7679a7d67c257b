"""The code that runs inside every task interpreter: the `walle` task API, the run-time half
of the sandbox, the budget watchdog and the request handler.

This file is deliberately self-contained (stdlib only, no package-relative imports): the
sub-interpreter backend executes its compiled code directly in a fresh isolated
interpreter without importing `walle_device`, and the process backend imports it as a
normal module in a spawned child. The sandbox's allow-lists arrive as data
(`policy.as_data()`, marshal'ed) when the interpreter boots. Everything that crosses the
boundary is `marshal` bytes of plain data (None, bool, int, float, str, bytes, list, tuple,
dict), produced here by trusted code from exact builtin types only, so a task object never
runs code on the host; and the host checks all of it again (`boundary.py`).

The run-time layer does not rely on the load-time checker: an audit hook refuses every
side effect that is not on the policy's list while task code runs (files outside the
bundle, os/subprocess/socket/ctypes, gc walks, frame and code reads, unmarshalling), the
builtins are a fresh restricted dict per task (no 3-argument `type()`, a `__build_class__`
that refuses metaclasses and checks what a class defines), and the task API keeps its
private state in closures, not in attributes a task could read or overwrite.
"""

from __future__ import annotations

import builtins as _builtins
import copy
import functools
import gc
import itertools
import marshal
import math
import operator
import os
import sys
import threading
import time
import types
from _thread import get_ident
from json.encoder import c_encode_basestring_ascii as _json_escape
from typing import Any

GUEST_FILE = (lambda: 0).__code__.co_filename
MONITOR_TOOL = 4  # sys.monitoring tool ids 0-2 and 5 are named for debuggers etc.; 4 is free
WATCHDOG_TICK_S = 0.01
LOG_MAX_LINES = 200
LOG_MAX_CHARS = 2000
# One run's uploads together, JSON-expanded, one byte charged per upload for its separator:
# they leave as one tunnel result (walle_device.tunnel caps an item at 192 KiB) or in upload
# frames of at most walle_device.protocol.MAX_FRAME_BYTES, so the cap is what the wire carries
# (test_upload_cap_fits_the_wire keeps the three in step; this file imports nothing of ours).
UPLOAD_MAX_BYTES = 160 << 10
TENSORS_MAX = 64
TENSOR_BYTES_DEFAULT_CAP = 1 << 30
OUTPUT_MAX_BYTES = 4 << 20
PLAIN_MAX_DEPTH = 64
PLAIN_MAX_ITEMS = 1_000_000
PLAIN_MAX_INT_BITS = 14_000
_STR_SLICE = 1 << 16  # characters escaped at a time when sizing a string
READ_MAX_BYTES = 64 << 20
SHUTDOWN_BUDGET_S = 1.0
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

# The sandbox policy (walle_device/vm/policy.py as data), set by init().
P: dict[str, Any] = {}


def _open_statm() -> int | None:
    try:
        return os.open("/proc/self/statm", os.O_RDONLY)
    except OSError:  # not Linux: the memory budget is off, the process backend's rlimit is not
        return None


# --------------------------------------------------------------------------- exceptions
class SandboxViolation(Exception):
    """The task tried something the sandbox does not allow (import, builtin, attribute)."""


class FileAccessRefused(SandboxViolation, PermissionError):
    """The sandbox refused a file operation; a PermissionError too, so library code that
    copes with an unreadable cache file (the engine's tuning cache) carries on."""


class TaskTimeout(BaseException):
    """The run exceeded its wall-time budget. BaseException so `except Exception` misses it."""


class MemoryBudgetExceeded(BaseException):
    """The process grew by more than the run's memory budget while the run was going."""


class StateFull(Exception):
    """`ctx.state` would exceed the task's byte cap."""


class ModelUnavailable(RuntimeError):
    """`ctx.model()` cannot load: no such bundle file, or walle_engine is not installed."""


for _cls in (
    SandboxViolation,
    FileAccessRefused,
    TaskTimeout,
    MemoryBudgetExceeded,
    StateFull,
    ModelUnavailable,
):
    _cls.__module__ = "walle"  # tracebacks read "walle.TaskTimeout", the name tasks import

# What `import walle` offers tasks.
WALLE_EXCEPTIONS = (
    SandboxViolation,
    TaskTimeout,
    MemoryBudgetExceeded,
    StateFull,
    ModelUnavailable,
)


# --------------------------------------------------------------------------- plain data
def plain(obj: Any, what: str = "value", max_bytes: int | None = None, json: bool = False) -> Any:
    """Return a copy of `obj` made only of exact builtin data types, or raise TypeError
    (not plain data) or ValueError (larger than `max_bytes` once expanded).

    Ints are at most PLAIN_MAX_INT_BITS bits (str() and JSON refuse longer ones, so the
    host could not report them), and int dict keys stay below 2**61 in magnitude, where
    CPython's hash of an int is the int itself: no task can hand the host a dict whose
    keys all collide. With `json` (uploads, which the device sends as JSON) bytes and
    non-finite floats are refused too.

    The size is the *expanded* size (`expanded_size`): marshal writes an object that occurs
    many times once and refers back to it, so a small marshal blob can stand for a huge
    JSON document; here every occurrence counts. Bounded in depth, items and bytes,
    because it runs in guest code that the budget cannot interrupt, and on the host."""
    cap = (1 << 62) if max_bytes is None else max_bytes
    left = [PLAIN_MAX_ITEMS, cap]
    out = _plain(obj, what, 0, left, True, json)
    if left[1] < 0:  # pragma: no cover - _plain raises first
        raise ValueError(f"{what} is larger than {cap} bytes")
    return out


_HASH_MODULUS = (1 << 61) - 1  # sys.hash_info.modulus on 64-bit builds


def _check_int(n: int, what: str) -> None:
    if n.bit_length() > PLAIN_MAX_INT_BITS:
        raise ValueError(
            f"{what} holds an int of {n.bit_length()} bits, over {PLAIN_MAX_INT_BITS} "
            "(about 4200 digits, what str() and JSON accept); send it as a str"
        )


def expanded_size(obj: Any) -> int:
    """Bytes `obj` takes when every shared reference is written out (JSON-like upper bound)."""
    left = [PLAIN_MAX_ITEMS, 1 << 62]
    _plain(obj, "value", 0, left, copy=False)
    return (1 << 62) - left[1]


def _charge(left: list[int], n: int, what: str, items: int = 0) -> None:
    left[1] -= n
    if left[1] < 0:
        raise ValueError(
            f"{what} is too large once expanded (every repeated reference counts); "
            "send less data, or keep bulk data in tensors"
        )
    if items:
        left[0] -= items
        if left[0] < 0:
            raise TypeError(f"{what} holds more than {PLAIN_MAX_ITEMS} items in all")


def _str_size(s: str, limit: int) -> int:
    """The bytes JSON takes for `s` as the device sends it (ASCII-only JSON: a control
    character is 6 bytes, an astral code point 12), counted in slices so a huge string is
    never escaped whole; past `limit` the count stops (the caller refuses it anyway)."""
    size = len(s) + 2
    if size > limit:
        return size
    size = 2
    for start in range(0, len(s), _STR_SLICE):
        size += len(_json_escape(s[start : start + _STR_SLICE])) - 2
        if size > limit:
            break
    return size


def _plain(
    obj: Any, what: str, depth: int, left: list[int], copy: bool = True, json: bool = False
) -> Any:
    if depth > PLAIN_MAX_DEPTH:
        raise TypeError(f"{what} is nested deeper than {PLAIN_MAX_DEPTH} levels")
    t = type(obj)
    # Exact type checks on purpose: a subclass could run task code during encoding.
    if obj is None or t is bool:
        _charge(left, 5, what)
        return obj
    if t is int:
        _check_int(obj, what)
        _charge(left, obj.bit_length() // 3 + 2, what)
        return obj
    if t is float:
        if json and not math.isfinite(obj):
            raise ValueError(f"{what} holds {obj!r}, which JSON cannot carry; send None or a str")
        _charge(left, 24, what)
        return obj
    if t is str:
        _charge(left, _str_size(obj, left[1]), what)
        return obj
    if t is bytes or t is bytearray or t is memoryview:
        if json:
            raise TypeError(f"{what} holds {t.__name__}, which JSON cannot carry; send a str")
        n = obj.nbytes if t is memoryview else len(obj)
        _charge(left, 2 * n + 2, what)  # before copying: a huge bytearray is refused, not copied
        return obj if t is bytes or not copy else bytes(obj)
    if t is list or t is tuple:
        _charge(left, 2 + len(obj), what, len(obj))
        items = [_plain(v, what, depth + 1, left, copy, json) for v in obj]
        if not copy:
            return obj
        return items if t is list else tuple(items)
    if t is dict:
        _charge(left, 2 + 2 * len(obj), what, len(obj))
        out = {}
        for k, v in obj.items():
            tk = type(k)
            if not (tk is str or tk is int or tk is float or tk is bool or k is None):
                raise TypeError(
                    f"{what}: dict keys must be str/int/float/bool/None, got {tk.__name__}"
                )
            if tk is int and not -_HASH_MODULUS < k < _HASH_MODULUS:
                raise ValueError(
                    f"{what}: int dict keys must be below 2**61 in magnitude; use a str key"
                )
            if tk is float and json and not math.isfinite(k):
                raise ValueError(f"{what}: a {k!r} dict key cannot go to JSON; use a str key")
            _charge(left, _str_size(k, left[1]) if tk is str else 24, what)
            value = _plain(v, what, depth + 1, left, copy, json)
            if copy:
                out[k] = value
        return out if copy else obj
    raise TypeError(
        f"{what} must be plain data (None, bool, int, float, str, bytes, list, tuple, dict);"
        f" got {t.__name__}. Convert it first, e.g. list(x) or dict(x)."
    )


# --------------------------------------------------------------------------- watchdog
class Watchdog:
    """Enforces the per-run wall-time and memory budgets from a helper thread.

    PyThreadState_SetAsyncExc is only reachable through ctypes and would have to be called
    from inside this interpreter anyway. Instead, when a budget trips the watchdog turns on
    sys.monitoring events (per interpreter, zero cost while off) whose callback raises the
    budget exception in any code that is not this file. Because the callback fires on every
    line, jump and call, a task that catches the exception is interrupted again on its
    next line, so `except BaseException: pass` inside a loop cannot keep it alive.
    """

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.armed = False
        self.deadline = 0.0
        self.budget_s = 0.0
        self.mem_cap = 0
        self.mem_base = 0
        self.statm = _open_statm()
        self.pending: BaseException | None = None
        # True only while task code may be on the stack. The guest clears it with a plain
        # attribute store (which runs no Python code) as soon as control comes back, so
        # the guest's own calls into stdlib (threading, traceback) are never interrupted.
        self.live = False
        self.task_thread = 0
        self.stopping = False
        # The engine account charged for this run's tensors and the run's engine cancel
        # token (see Guest.bind_engine): a timeout also cancels the token, so a model run
        # stops at its next step instead of finishing inside C++, where no Python event
        # can reach it.
        self.engine_account: Any = None
        self.engine_token: Any = None
        mon = sys.monitoring
        mon.use_tool_id(MONITOR_TOOL, "walle-budget")
        ev = mon.events
        self.events = ev.LINE | ev.JUMP | ev.PY_START | ev.PY_RESUME
        for e in (ev.LINE, ev.JUMP, ev.PY_START, ev.PY_RESUME):
            mon.register_callback(MONITOR_TOOL, e, self._on_event)
        self.thread = threading.Thread(target=self._loop, name="walle-watchdog")
        self.thread.start()

    def _on_event(self, code: types.CodeType, *_: Any) -> Any:
        exc = self.pending
        # Only the task's thread, and never this file: the guest must be able to clean up.
        if (
            exc is not None
            and self.live
            and code.co_filename != GUEST_FILE
            and get_ident() == self.task_thread
        ):
            raise type(exc)(*exc.args)
        return None

    def arm(self, timeout_s: float, mem_cap: int) -> None:
        with self.cond:
            self.deadline = time.monotonic() + timeout_s
            self.budget_s = timeout_s
            self.task_thread = get_ident()
            self.mem_cap = mem_cap if self.statm is not None else 0
            self.mem_base = self._rss() if self.mem_cap else 0
            self.pending = None
            self.armed = True
            self.live = True
            self.cond.notify()

    def disarm(self) -> BaseException | None:
        """Stop enforcing; return the budget exception if one fired during the run."""
        self.live = False
        with self.cond:
            if self.armed and self.pending is None and self._over_memory():
                # One last sample: what the run still holds as it returns (say a huge
                # value built by its last expression) counts, even between two ticks.
                self.pending = self._memory_error()
            self.armed = False
            fired, self.pending = self.pending, None
            sys.monitoring.set_events(MONITOR_TOOL, 0)
        return fired

    def remaining(self) -> float:
        return self.deadline - time.monotonic() if self.armed else float("inf")

    def _fire(self, exc: BaseException) -> None:
        self.pending = exc
        sys.monitoring.set_events(MONITOR_TOOL, self.events)
        if self.engine_token is not None:
            self.engine_token.cancel()

    def _loop(self) -> None:
        with self.cond:
            while not self.stopping:
                if not self.armed or self.pending is not None:
                    self.cond.wait()
                    continue
                left = self.deadline - time.monotonic()
                if left <= 0:
                    self._fire(
                        TaskTimeout(
                            f"run exceeded its {self.budget_s:g} s wall-time budget (config timeout_s)"
                        )
                    )
                    continue
                if self._over_memory():
                    self._fire(self._memory_error())
                    continue
                self.cond.wait(min(left, WATCHDOG_TICK_S))

    def stop(self) -> None:
        self.disarm()
        with self.cond:
            self.stopping = True
            self.cond.notify()
        self.thread.join()
        sys.monitoring.set_events(MONITOR_TOOL, 0)
        sys.monitoring.free_tool_id(MONITOR_TOOL)
        if self.statm is not None:
            os.close(self.statm)
            self.statm = None

    def _over_memory(self) -> bool:
        return bool(self.mem_cap) and self._rss() - self.mem_base > self.mem_cap

    def _memory_error(self) -> MemoryBudgetExceeded:
        return MemoryBudgetExceeded(
            f"the process grew by more than {self.mem_cap >> 20} MiB during the run"
            " (config max_memory_mb)"
        )

    def _rss(self) -> int:
        # sys.getallocatedblocks() would be per-interpreter in spirit, but in 3.13 it sums
        # the arenas of *every* interpreter without their GILs and crashed here under
        # load; the per-interpreter counter is not exported. Process RSS growth since the
        # run started is the honest approximation (see docs/task-authoring.md).
        assert self.statm is not None
        return int(os.pread(self.statm, 64, 0).split()[1]) * PAGE_SIZE


# --------------------------------------------------------------------------- sandbox (runtime half)
# The names the running task defines itself (sandbox.task_names), set for each run: one
# run at a time per interpreter.
_OWN_NAMES: list[frozenset[str]] = [frozenset()]


def attr_allowed(name: str, own: frozenset[str] | None = None) -> bool:
    """sandbox.attr_allowed, on the same data: the policy's list or the task's own names,
    never the blocked families."""
    if name.startswith("_"):
        return name in P["READABLE_DUNDERS"] or name in P["SAFE_PRIVATE"]
    if name in P["BLOCKED_ATTRS"] or name.startswith(P["BLOCKED_ATTR_PREFIXES"]):
        return False
    return name in P["ATTRIBUTE_NAMES"] or name in (_OWN_NAMES[0] if own is None else own)


def _check_attr(name: Any) -> None:
    if type(name) is not str:
        raise TypeError("attribute name must be a string")
    if not attr_allowed(name):
        raise SandboxViolation(
            f"access to attribute {name!r} is not allowed in tasks: attribute names must be "
            "on the sandbox's list or defined by the task itself, and names starting with '_' "
            "and frame/code attributes are blocked"
        )


_MISSING = object()
_real_getattr = getattr
_real_type = type
_real_build_class = _builtins.__build_class__
_type_dict = type.__dict__["__dict__"].__get__


def safe_getattr(obj: Any, name: str, default: Any = _MISSING) -> Any:
    _check_attr(name)
    if name in ("format", "format_map"):
        return fmt_attr(obj, name)
    if name == "obj" and isinstance(obj, memoryview):
        raise SandboxViolation("memoryview.obj is not available in tasks")
    if default is _MISSING:
        return _real_getattr(obj, name)
    return _real_getattr(obj, name, default)


def safe_hasattr(obj: Any, name: str) -> bool:
    _check_attr(name)
    return hasattr(obj, name)


def _check_store(name: Any) -> None:
    _check_attr(name)
    if name.startswith("_"):  # rebinding __name__ etc. would fool the import machinery
        raise SandboxViolation(f"setting attribute {name!r} is not allowed in tasks")


def _owned(cls: Any) -> bool:
    """A class the task itself defined: its module is one of the task's own modules."""
    module = _type_module(cls)
    return _real_type(module) is str and module.startswith("walle_task.")


# The ordinary attribute stores of instances and of classes: anything else is a class's own
# __setattr__ (typing's aliases forward a store to their origin class, for one).
_ORDINARY_SETATTR = (object.__dict__["__setattr__"], type.__dict__["__setattr__"])


def store_target(obj: Any) -> Any:
    """`obj`, if a task may set or delete attributes on it. Target of the checker's rewrite
    of `x.attr = v` / `del x.attr`, and of the task's setattr/delattr.

    An allow-list: the task's own classes and their instances, the task's own functions,
    and exception instances, when their class stores attributes the ordinary way.
    Everything else may be shared with the other tasks of this interpreter (a stdlib,
    engine or guest class, a module's function, a dtype object a module hands out) or
    forwards the store to such an object, so a task could plant code that another task's
    run would call."""
    cls = _real_type(obj)
    if issubclass(cls, types.ModuleType):
        name = types.ModuleType.__dict__["__dict__"].__get__(obj).get("__name__")
        raise SandboxViolation(f"module {name!r} is read-only in tasks")
    if issubclass(cls, _real_type):
        ok, what = _owned(obj), f"the class {_type_name(obj)}"
    elif cls is types.FunctionType:
        ok, what = _is_task_code(obj), "this function"
    else:
        ok, what = _owned(cls) or issubclass(cls, BaseException), f"a {_type_name(cls)} object"
    if ok:
        for klass in _type_mro(cls):
            impl = _type_dict(klass).get("__setattr__")
            if impl is not None:
                ok = any(impl is o for o in _ORDINARY_SETATTR) or _owned(klass)
                break
    if not ok:
        raise SandboxViolation(
            f"{what} is not the task's own (it may be shared by every task in this "
            "interpreter): tasks set attributes only on the classes, instances and functions "
            "they define; subclass it, or keep the value in your own object"
        )
    return obj


def safe_setattr(obj: Any, name: str, value: Any) -> None:
    _check_store(name)
    setattr(store_target(obj), name, value)


def safe_delattr(obj: Any, name: str) -> None:
    _check_store(name)
    delattr(store_target(obj), name)


def _own_class_only(decorator: Any) -> Any:
    """dataclass/total_ordering for the task's own classes only: applied to a shared
    class they would rewrite it under every other task in the interpreter."""

    @functools.wraps(decorator)
    def guarded(cls: Any = None, /, **kwargs: Any) -> Any:
        if cls is None:
            return lambda c: guarded(c, **kwargs)
        store_target(cls)
        return decorator(cls, **kwargs)

    return guarded


class _SafeFormatter:
    """str.format whose field lookups ("{0.attr}") go through the sandbox's attribute rule."""

    def __init__(self) -> None:
        import _string
        import string

        split = _string.formatter_field_name_split

        class F(string.Formatter):
            def get_field(self, field_name: str, args: Any, kwargs: Any) -> Any:
                first, rest = split(field_name)
                obj = self.get_value(first, args, kwargs)
                for is_attr, key in rest:
                    obj = safe_getattr(obj, key) if is_attr else obj[key]
                return obj, first

        self.f = F()

    def format(self, fmt: str, /, *args: Any, **kwargs: Any) -> str:
        return self.f.vformat(fmt, args, kwargs)

    def format_map(self, fmt: str, mapping: Any) -> str:
        return self.f.vformat(fmt, (), mapping)


_FORMATTER = _SafeFormatter()


_BuiltinMethod = types.BuiltinMethodType


def fmt_attr(obj: Any, name: str) -> Any:
    """Target of the load-time rewrite of `x.format` / `x.format_map` in task code (and of
    getattr with those names): whatever path led there (a str subclass's class, super(),
    a bound method), a result that is CPython's own str.format or format_map, which look
    attributes up by name, is replaced by the sandbox's formatter. Decided on the result,
    not on `obj`, so no object can hand out the real one."""
    return _safe_formatter(_real_getattr(obj, name))


def _safe_formatter(value: Any) -> Any:
    # Identity, not ==: no task code decides what this is.
    if value is str.format or value is str.format_map:  # unbound: the format string is arg 0
        return _FORMATTER.format if value is str.format else _FORMATTER.format_map
    if _real_type(value) is _BuiltinMethod:
        owner = _real_getattr(value, "__self__", None)
        kind = _real_getattr(value, "__name__", "")
        if isinstance(owner, str) and kind in ("format", "format_map"):
            return functools.partial(_real_getattr(_FORMATTER, kind), owner)
    return value


def _blocked(name: str, hint: str) -> Any:
    def refuse(*_a: Any, **_k: Any) -> Any:
        raise SandboxViolation(f"{name}() is not available in tasks: {hint}")

    refuse.__name__ = name
    return refuse


class Sealed(type):
    """Metaclass of the task API classes: another task in the same interpreter must not be
    able to replace `ctx.state.get` or `ctx.upload` on the class and see its data."""

    def __setattr__(cls, name: str, value: Any) -> None:
        raise SandboxViolation(f"the class {cls.__name__} is read-only in tasks")

    def __delattr__(cls, name: str) -> None:
        raise SandboxViolation(f"the class {cls.__name__} is read-only in tasks")


def _is_metaclass(obj: Any) -> bool:
    return obj is SafeType or (isinstance(obj, _real_type) and issubclass(obj, _real_type))


class _SafeTypeMeta(Sealed):
    # `isinstance(C, type)` and `issubclass(M, type)` keep working with the task's `type`.
    def __instancecheck__(cls, obj: Any) -> bool:
        return isinstance(obj, _real_type)

    def __subclasscheck__(cls, sub: Any) -> bool:
        return issubclass(sub, _real_type)


class SafeType(metaclass=_SafeTypeMeta):
    """The task's `type`: `type(x)` as usual, but no three-argument form (it would build a
    class from a computed dict, past the checker's class-body rules) and no metaclass
    objects (they build classes the same way)."""

    __slots__ = ()

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if len(args) != 1 or kwargs:
            raise SandboxViolation(
                "type(name, bases, dict) is not available in tasks: write a class statement"
            )
        t = _real_type(args[0])
        if t is _real_type:
            return SafeType
        if issubclass(t, _real_type):
            raise SandboxViolation(
                f"the metaclass {t.__name__} is not available in tasks (it builds classes)"
            )
        return t


_real_type.__setattr__(SafeType, "__name__", "type")
_real_type.__setattr__(SafeType, "__qualname__", "type")


def _is_task_code(value: Any) -> bool:
    """True for a function (or a method wrapper around one) written by a task."""
    for attr in ("__func__", "fget", "fset", "fdel"):
        inner = _real_getattr(value, attr, None) if _real_type(value) in _WRAPPERS else None
        if inner is not None and _is_task_code(inner):
            return True
    if _real_type(value) is types.FunctionType:
        name = value.__globals__.get("__name__")
        return _real_type(name) is str and name.startswith("walle_task.")
    return False


_WRAPPERS = (classmethod, staticmethod, property)


def safe_build_class(func: Any, name: Any, /, *bases: Any, **kwds: Any) -> Any:
    """The task's `__build_class__` (what a class statement calls): no keywords
    (metaclass=...), no metaclass bases, and the new class may define only what the
    policy lists. Holds even where the load-time checker has a gap."""
    if kwds:
        raise SandboxViolation("class keywords (metaclass=...) are not allowed in tasks")
    for base in bases:
        if _is_metaclass(base):
            raise SandboxViolation("a task class cannot derive from type (no metaclasses)")
    cls = _real_build_class(func, name, *bases)
    check_class(cls)
    return cls


def check_class(cls: Any) -> None:
    allowed = P["CLASS_METHODS"] | P["CLASS_BODY_NAMES"]
    for key, value in list(_type_dict(cls).items()):
        if _real_type(key) is not str:
            raise SandboxViolation("a task class may only define str names")
        if not key.startswith("_") or key in allowed:
            if key == "__match_args__" or key == "__slots__":
                names = (value,) if _real_type(value) is str else value
                if _real_type(names) not in (tuple, list) or not all(
                    _real_type(n) is str and not n.startswith("_") and attr_allowed(n)
                    for n in names
                ):
                    raise SandboxViolation(
                        f"{key} of a task class must be a tuple of public attribute names"
                    )
            continue
        if key in P["CLASS_MACHINERY_NAMES"] and not _is_task_code(value):
            continue  # added by type/ABCMeta/NamedTuple/Protocol themselves
        raise SandboxViolation(
            f"a task class may not define {key!r} (sandbox allowlist: public names and "
            + ", ".join(sorted(allowed))
            + ")"
        )


class ReadOnlyModule(types.ModuleType):
    """Module proxies and task modules are shared by the runs of one interpreter (module
    proxies by every task): refuse monkeypatching."""

    def __setattr__(self, name: str, value: Any) -> None:
        raise SandboxViolation(f"module {self.__name__!r} is read-only in tasks")

    def __delattr__(self, name: str) -> None:
        raise SandboxViolation(f"module {self.__name__!r} is read-only in tasks")


def module_spec(name: str, requires: frozenset[str]) -> Any:
    """What a task may see of module `name` ("*" or a set of names), or None if refused."""
    spec = P["ALLOWED_MODULES"].get(name) or P["ENGINE_MODULES"].get(name)
    if spec is None and "numpy" in requires:
        spec = P["NUMPY_MODULES"].get(name)
    return spec


def _budget_sleep(seconds: float) -> None:
    """time.sleep that honours the run's budget (a plain sleep cannot be interrupted)."""
    end = time.monotonic() + max(0.0, float(seconds))
    while True:
        exc = _GUEST.watchdog.pending if _GUEST else None
        if exc is not None:
            raise type(exc)(*exc.args)
        left = end - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.02))


def _proxy(
    name: str, mod: Any, spec: Any, denied: set[str] | frozenset[str] = frozenset()
) -> types.ModuleType:
    """A fresh, read-only module object holding only the allowed attributes of `mod`."""
    proxy = ReadOnlyModule(name, getattr(mod, "__doc__", None))
    names = offered_names(mod, spec)
    for n in names:
        if n in denied:
            continue
        try:
            v = getattr(mod, n)
        except Exception:  # missing, or a lazy attribute that cannot load here (numpy)
            continue
        if isinstance(v, types.ModuleType):
            continue  # a module attribute would hand out os/sys/codecs behind the allowlist
        if _is_metaclass(v):
            continue  # ABCMeta & co. build classes from a computed dict
        proxy.__dict__[n] = v
    if name == "time":
        proxy.__dict__["sleep"] = _budget_sleep
    for attr in P["OWN_CLASS_DECORATORS"].get(name, ()):
        proxy.__dict__[attr] = _own_class_only(proxy.__dict__[attr])

    proxy.__dict__["__getattr__"] = _missing_attr(name)
    return proxy


def offered_names(mod: Any, spec: Any) -> list[str]:
    """The names of `mod` a task may see: the listed ones, or for "*" the module's declared
    public API (`__all__`; else its public names), not what it happens to import."""
    if spec != "*":
        return sorted(spec)
    declared = _real_getattr(mod, "__all__", None)
    names = declared if declared is not None else dir(mod)
    return sorted(n for n in names if _real_type(n) is str and not n.startswith("_"))


def _missing_attr(module: str) -> Any:
    def __getattr__(attr: str) -> Any:
        # Not AttributeError: on AttributeError `from json import decoder` falls back to
        # sys.modules["json.decoder"], which would hand out the real module.
        raise SandboxViolation(f"{module}.{attr} is not available in tasks (sandbox allowlist)")

    return __getattr__


# --------------------------------------------------------------------------- audit gate
class AuditGate:
    """Per-interpreter audit hook (sys.addaudithook hooks belong to the interpreter that
    adds them) that refuses, while a run is open, every audit event the policy does not
    list: whatever object a task reached, the side effects stay closed.

    Its state lives in the hook's closure, not in attributes: `begin()` opens a run and
    returns a token object that only the guest's request handler holds; only that token
    closes the run again, so a task that reached the gate still cannot switch it off."""

    __slots__ = ("begin", "end")

    def __init__(self, runtime_dirs: tuple[str, ...]) -> None:
        current: list[Any] = [None]  # (token, allowed files, allowed import tops) or None
        # The import system reads a cached module with open(x.pyc) then marshal.loads of
        # its body: marshal.loads is allowed for exactly the bytes of the .pyc just opened.
        pyc: list[Any] = [None, False]  # path of the last .pyc opened, re-reading now
        allowed = P["AUDIT_ALLOWED"]
        meta_names = P["AUDIT_SETATTR_NAMES"]
        lazy = P["AUDIT_IMPORTS"]
        stdlib = sys.stdlib_module_names - P["AUDIT_IMPORTS_DENIED"]
        write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
        fspath, normpath, join, getcwd = os.fspath, os.path.normpath, os.path.join, os.getcwd
        # Path types whose __fspath__ is the stdlib's own (the engine opens models by Path);
        # pathlib is not imported here, only recognised once something else imported it.
        std_paths = {("pathlib._local", "PosixPath"), ("pathlib._local", "PurePosixPath")}

        def readable(path: Any, files: frozenset[str]) -> bool:
            kind = _real_type(path)
            if (
                kind is not str
                and kind is not bytes
                and ((_type_module(kind), _type_name(kind)) not in std_paths)
            ):
                return False  # a file descriptor, or an object whose __fspath__ is task code
            p = fspath(path)
            if _real_type(p) is bytes:
                p = p.decode("utf-8", "surrogateescape")
            p = normpath(join(getcwd(), p))
            return p in files or any(p.startswith(d) for d in runtime_dirs)

        def is_cached_module(data: Any) -> bool:
            path, pyc[0] = pyc[0], None
            if path is None or _real_type(data) is not bytes:
                return False
            pyc[1] = True
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    raw = os.read(fd, len(data) + 17)
                finally:
                    os.close(fd)
            except OSError:
                return False
            finally:
                pyc[1] = False
            return raw[16:] == data

        def own_class(module: Any) -> bool:
            if _real_type(module) is not str:
                return False
            if module.startswith("walle_task."):
                return True  # dataclass and total_ordering decorate the task's classes
            # A module the import system is executing right now (numpy's lazy imports
            # define classes and finish them with setattr); never a loaded, shared one.
            spec = _real_getattr(sys.modules.get(module), "__spec__", None)
            return _real_getattr(spec, "_initializing", False) is True

        def hook(event: str, args: tuple[Any, ...]) -> None:
            run = current[0]
            if run is None or pyc[1]:
                return
            if event == "marshal.loads" and is_cached_module(args[0]):
                return
            if event in allowed:
                if event == "import":
                    # Loading a module runs no task code; what it could then do is held by
                    # the other events. Only the standard library and the allowed packages.
                    top = args[0].partition(".")[0]
                    if top in run[2] or top in lazy or top in stdlib:
                        return
                elif event == "open":
                    path, mode, flags = args
                    read_only = (mode is None or not any(c in mode for c in "wax+")) and not (
                        (flags or 0) & write_flags
                    )
                    if read_only and readable(path, run[1]):
                        if _real_type(path) is str and path.endswith(".pyc"):
                            pyc[0] = path
                        return
                else:
                    return
            elif event in ("os.listdir", "os.scandir") and readable(args[0], frozenset()):
                return  # the import system refreshing its view of the runtime's own dirs
            elif event in ("object.__setattr__", "object.__delattr__"):
                target, name = args[0], args[1]
                if name in meta_names and not (name == "__code__"):
                    return  # namedtuple, dataclass and pybind11 naming what they build
                if isinstance(target, _real_type) and own_class(_type_module(target)):
                    return  # a task's own class, or one a module being imported defines
            elif event == "object.__getattr__" and args[1] in P["AUDIT_GETATTR_NAMES"]:
                return  # inspect.signature (dataclasses, numpy) reads these; frames stay out
            what = args[0] if event in ("import", "open") and args else ""
            refusal = (
                FileAccessRefused
                if event == "open" or event.startswith("os.")
                else (SandboxViolation)
            )
            raise refusal(
                f"the sandbox refused {event}{f' {what!r}' if what else ''} while the task "
                "was running (audit hook; see docs/task-authoring.md, The sandbox)"
            )

        def begin(files: Any, import_tops: frozenset[str]) -> object:
            if current[0] is not None:
                raise SandboxViolation("a run is already open in this interpreter")
            token = object()
            current[0] = (token, frozenset(files), import_tops)
            return token

        def end(token: object) -> None:
            run = current[0]
            if run is not None and run[0] is token:
                current[0] = None

        sys.addaudithook(hook)
        self.begin = begin
        self.end = end


# --------------------------------------------------------------------------- task API
class Log(metaclass=Sealed):
    """`ctx.log`: call it or use .info/.warning/.error; lines go back with the result."""

    __slots__ = ("_dropped", "_lines")

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._dropped = 0

    def _add(self, level: str, args: tuple[Any, ...]) -> None:
        if len(self._lines) >= LOG_MAX_LINES:
            self._dropped += 1
            return
        msg = " ".join(a if type(a) is str else repr(a) for a in args)
        self._lines.append(f"{level} {msg[:LOG_MAX_CHARS]}")

    def __call__(self, *args: Any) -> None:
        self._add("INFO", args)

    def debug(self, *args: Any) -> None:
        self._add("DEBUG", args)

    def info(self, *args: Any) -> None:
        self._add("INFO", args)

    def warning(self, *args: Any) -> None:
        self._add("WARNING", args)

    def error(self, *args: Any) -> None:
        self._add("ERROR", args)


class State(metaclass=Sealed):
    """`ctx.state`: keyed task state with per-key TTL and a byte cap, kept by the host
    between runs. Only the keys a run changes are sent back (last writer wins per key).
    Sizes are expanded sizes (see `expanded_size`), the same measure the host applies."""

    __slots__ = ("_cap", "_changed", "_data", "_deleted", "_sizes", "_used")

    def __init__(self, snapshot: dict[str, tuple[Any, float | None]], cap: int) -> None:
        now = time.time()
        self._data = {k: v for k, v in snapshot.items() if v[1] is None or v[1] > now}
        self._cap = cap
        self._sizes = {k: self._size(k, v[0]) for k, v in self._data.items()}
        self._used = sum(self._sizes.values())
        self._changed: set[str] = set()
        self._deleted: set[str] = set()

    @staticmethod
    def _size(key: str, value: Any) -> int:
        return len(key.encode("utf-8", "surrogatepass")) + expanded_size(value)

    def _live(self, key: str) -> bool:
        item = self._data.get(key)
        if item is None:
            return False
        if item[1] is not None and item[1] <= time.time():
            self._drop(key)
            return False
        return True

    def _drop(self, key: str) -> None:
        self._data.pop(key, None)
        self._used -= self._sizes.pop(key, 0)

    def get(self, key: str, default: Any = None) -> Any:
        """The value for `key` (a copy), or `default` when missing or expired."""
        return copy.deepcopy(self._data[key][0]) if self._live(key) else default

    def set(self, key: str, value: Any, ttl_s: float | None = None) -> None:
        """Store plain data under `key`, optionally expiring `ttl_s` seconds from now."""
        if type(key) is not str or not key or len(key) > 256:
            raise TypeError("state keys must be non-empty str of at most 256 characters")
        value = plain(value, f"ctx.state[{key!r}]")
        size = self._size(key, value)
        new_used = self._used - self._sizes.get(key, 0) + size
        if new_used > self._cap:
            raise StateFull(
                f"ctx.state would hold {new_used} bytes, over the task's cap of {self._cap}; "
                "delete keys, use ttl_s, or raise config['state_max_bytes']"
            )
        expires = None if ttl_s is None else time.time() + float(ttl_s)
        self._data[key] = (value, expires)
        self._used = new_used
        self._sizes[key] = size
        self._changed.add(key)
        self._deleted.discard(key)

    def delete(self, key: str) -> None:
        if type(key) is not str:  # the key goes back to the host with the run
            raise TypeError("state keys must be str")
        if key in self._data:
            self._drop(key)
        self._changed.discard(key)
        self._deleted.add(key)

    def incr(self, key: str, amount: int | float = 1, ttl_s: float | None = None) -> Any:
        value = self.get(key, 0) + amount
        self.set(key, value, ttl_s)
        return value

    def keys(self) -> list[str]:
        return [k for k in list(self._data) if self._live(k)]

    def items(self) -> list[tuple[str, Any]]:
        return [(k, self.get(k)) for k in self.keys()]

    def size_bytes(self) -> int:
        return self._used

    def clear(self) -> None:
        for k in list(self._data):
            self.delete(k)

    def __getitem__(self, key: str) -> Any:
        if not self._live(key):
            raise KeyError(key)
        return self.get(key)

    def __setitem__(self, key: str, value: Any) -> None:
        self.set(key, value)

    def __delitem__(self, key: str) -> None:
        self.delete(key)

    def __contains__(self, key: object) -> bool:
        return type(key) is str and self._live(key)

    def __len__(self) -> int:
        return len(self.keys())

    def _delta(self) -> dict[str, Any]:
        return {
            "set": {k: self._data[k] for k in self._changed if k in self._data},
            "del": sorted(self._deleted),
        }


class Context(metaclass=Sealed):
    """The object passed to a task's `run(ctx)`. Plain slots: the run's private state (its
    uploads, returned tensors, task and budget) lives in the closures of the methods made
    by `_make_context`, so no attribute, `copy`, `vars` or `__dict__` path reaches it."""

    __slots__ = (
        "buffers",
        "config",
        "device",
        "files",
        "inputs",
        "log",
        "model",
        "read",
        "return_tensor",
        "state",
        "task_id",
        "time_left",
        "upload",
        "window",
    )


class _Run:
    """What one run hands back besides its return value; seen by the guest only."""

    __slots__ = ("tensor_bytes", "tensor_cap", "tensors", "token", "upload_bytes", "uploads")

    def __init__(self, token: int, tensor_cap: int) -> None:
        self.token = token
        self.uploads: list[Any] = []
        self.upload_bytes = 2  # the brackets of the list the host measures
        self.tensors: dict[str, Any] = {}
        self.tensor_bytes = 0
        self.tensor_cap = tensor_cap


def _make_context(
    task: LoadedTask,
    req: dict[str, Any],
    run: _Run,
    log: Log,
    state: State,
    buffers: dict[str, memoryview],
    watchdog: Watchdog,
) -> Context:
    ctx = Context()
    ctx.task_id = task.task_id
    ctx.config = copy.deepcopy(req.get("config") or {})  # per run: no other task's config here
    ctx.inputs = req.get("inputs") or {}
    ctx.window = req.get("window")
    ctx.device = req.get("device") or {}
    ctx.buffers = buffers
    ctx.state = state
    ctx.log = log
    ctx.files = tuple(sorted(task.files))

    def upload(payload: Any) -> None:
        """Queue `payload` (plain data) for the tunnel; it leaves with the run result."""
        payload = plain(
            payload, "ctx.upload() payload", UPLOAD_MAX_BYTES - run.upload_bytes - 1, json=True
        )
        run.upload_bytes += expanded_size(payload) + 1
        run.uploads.append(payload)

    def model(name: str) -> Any:
        """Load (once per interpreter) the bundle's model file `name` with walle_engine."""
        return task.model(name)

    def return_tensor(name: str, array: Any) -> None:
        """Hand an engine array (a `walle_engine.np` array or a Tensor) to the device
        runtime as `RunResult.tensors[name]`: by handle, without a copy (copied once in the
        process backend). Kept only if the run succeeds; until the runtime frees it, the
        memory stays charged to this task."""
        if type(name) is not str or len(name) > 256:
            raise TypeError("tensor name must be a str of at most 256 characters")
        core = sys.modules.get("walle_engine._core")
        np_mod = sys.modules.get("walle_engine.np")
        if core is not None and type(array) is core.Tensor:
            t = array
        elif np_mod is not None and type(array) is np_mod.ndarray:
            t = array.tensor
        else:
            raise TypeError(
                "ctx.return_tensor() takes a walle_engine.np array or Tensor, "
                f"got {type(array).__name__}"
            )
        if name not in run.tensors and len(run.tensors) >= TENSORS_MAX:
            raise ValueError(f"a run may return at most {TENSORS_MAX} tensors")
        nbytes = math.prod(t.shape) * _ITEMSIZE.get(t.dtype, 8)
        old = run.tensors.pop(name, None)
        if old is not None:
            run.tensor_bytes -= old[1]
            _drop_exported({name: old}, run.token)
        if run.tensor_bytes + nbytes > run.tensor_cap:
            raise MemoryError(
                f"returned tensors would hold {run.tensor_bytes + nbytes} bytes, over the "
                f"run's cap of {run.tensor_cap} (config max_memory_mb)"
            )
        if task.guest.in_process:  # another process: the bytes travel
            item: Any = (t.dtype, tuple(t.shape), bytes(memoryview(t)))
        else:
            item = core.export_tensor(t, run.token)
        run.tensors[name] = (item, nbytes)
        run.tensor_bytes += nbytes

    def read(name: str) -> bytes:
        """The bytes of a (non-code) file from the task's bundle, e.g. a vocabulary."""
        return task.read(name)

    def time_left() -> float:
        """Seconds left in this run's wall-time budget."""
        return max(0.0, watchdog.remaining())

    ctx.upload = upload
    ctx.model = model
    ctx.return_tensor = return_tensor
    ctx.read = read
    ctx.time_left = time_left
    return ctx


_ITEMSIZE = {"float32": 4, "int32": 4, "int64": 8, "bool": 1, "uint8": 1}


def _drop_exported(tensors: dict[str, Any] | None, owner: int) -> None:
    """Free tensors handed over by ctx.return_tensor() that the host will never import."""
    core = sys.modules.get("walle_engine._core")
    for item, _ in (tensors or {}).values():
        if type(item) is int and core is not None:  # not the process backend's bytes
            core.drop_exported(item, owner)


# --------------------------------------------------------------------------- tasks and runs
class LoadedTask:
    """A task's compiled modules plus its per-interpreter caches (module globals, models).
    Holds no config: that comes with each run, so one task's config is never in memory
    while another task runs in the same interpreter."""

    def __init__(self, guest: Guest, spec: dict[str, Any]) -> None:
        self.task_id: str = spec["task_id"]
        self.key: str = spec["key"].replace(".", "_")
        self.files: dict[str, str] = spec["paths"]  # bundle file name -> path on the host
        # Unmarshalled here, before the run opens: no marshal.loads while task code runs.
        self.codes: dict[str, types.CodeType] = {
            name: marshal.loads(code) for name, code in spec["codes"].items()
        }
        self.guest = guest
        self.modules: dict[str, types.ModuleType] = {}
        self.models: dict[str, Any] = {}
        self.extra = frozenset(spec.get("requires") or ())
        self.names = frozenset(spec.get("names") or ())
        tops = {n.partition(".")[0] for n in (*P["ALLOWED_MODULES"], *P["ENGINE_MODULES"])}
        tops |= {n.partition(".")[0] for n in P["MODULE_SOURCES"].values()}
        tops |= P["LIBRARY_PACKAGES"] if "numpy" in self.extra else {"walle_engine"}
        self.import_tops = frozenset(tops)
        self.builtins = guest.make_builtins(self)
        # The task's own random state: the random module's functions are bound to it, so
        # no task can seed, or read the sequence of, another task's generator.
        self.rng = sys.modules["random"].Random()
        self._random: types.ModuleType | None = None
        import linecache

        for filename, src in spec["sources"].items():
            lines = src.splitlines(keepends=True)
            linecache.cache[filename] = (len(src), None, lines, filename)

    def import_module(self, name: str) -> types.ModuleType:
        mod = self.modules.get(name)
        if mod is None:
            # A unique name in sys.modules: dataclasses resolves string annotations through
            # sys.modules[cls.__module__], and no real module is called "walle_task.*".
            # Read-only: another module of the task must not rebind this one's globals.
            qualname = f"walle_task.{self.key}.{name}"
            mod = ReadOnlyModule(qualname)
            mod.__dict__["__builtins__"] = self.builtins
            self.modules[name] = mod
            fresh = qualname not in sys.modules
            sys.modules[qualname] = mod
            if fresh:
                self.guest.classes.task_module(+1)
            try:
                exec(self.codes[name], mod.__dict__)
            except BaseException:
                del self.modules[name]
                if sys.modules.pop(qualname, None) is not None and fresh:
                    self.guest.classes.task_module(-1)
                raise
        return mod

    def main(self) -> types.ModuleType:
        return self.import_module("__task__")

    def random_module(self) -> types.ModuleType:
        if self._random is None:
            real = sys.modules["random"]
            proxy = _proxy("random", real, P["ALLOWED_MODULES"]["random"])
            for n in list(proxy.__dict__):
                bound = _real_getattr(self.rng, n, None)
                if not n.startswith("_") and n != "Random" and callable(bound):
                    proxy.__dict__[n] = bound
            self._random = proxy
        return self._random

    def model(self, name: str) -> Any:
        if type(name) is not str:
            raise TypeError("model name must be a str")
        if name in self.models:
            return self.models[name]
        path = self.files.get(name)
        if path is None:
            stems = [f for f in self.files if f.rsplit(".", 1)[0] == name]
            path = self.files[stems[0]] if len(stems) == 1 else None
        if path is None:
            raise ModelUnavailable(
                f"no model file {name!r} in the task bundle; available: {sorted(self.files)}"
            )
        try:
            import walle_engine
        except ImportError as e:
            raise ModelUnavailable(
                f"walle_engine cannot be imported in this runtime ({e}); "
                "ctx.model() needs the engine"
            ) from None
        load = getattr(walle_engine, "load", None)
        if not callable(load):
            raise ModelUnavailable(
                "this walle_engine build has no load(); "
                "ctx.model() needs the engine's Python facade"
            )
        self.guest.bind_engine(self)
        model = load(path)
        self.models[name] = model
        return model

    def read(self, name: str) -> bytes:
        if type(name) is not str or name not in self.files:
            raise FileNotFoundError(
                f"no file {name!r} in the task bundle; available: {sorted(self.files)}"
            )
        with open(self.files[name], "rb") as f:  # the guest's own open, not the task's
            data = f.read(READ_MAX_BYTES + 1)
        if len(data) > READ_MAX_BYTES:
            raise ValueError(
                f"{name} is larger than {READ_MAX_BYTES} bytes; load models with ctx.model()"
            )
        return data


class Guest:
    """Per-interpreter singleton: loaded tasks, module proxies, watchdog, audit gate."""

    def __init__(self, in_process: bool, runtime_dirs: tuple[str, ...]) -> None:
        self.in_process = in_process
        self.tasks: dict[str, LoadedTask] = {}
        self.proxies: dict[str, types.ModuleType] = {}
        # Pre-import the allowlist at boot (off the hot path: the pool boots interpreters
        # ahead of need) so an import inside a task is a dict lookup, not a file-system
        # walk while the task's budget runs. walle_engine stays lazy: not every task uses it.
        for name in P["ALLOWED_MODULES"]:
            __import__(P["MODULE_SOURCES"].get(name, name))
        for name in ("encodings.utf_8", "encodings.latin_1", "encodings.ascii"):
            __import__(name)
        # Lazy imports during a run must not write .pyc files: the gate refuses writes.
        sys.dont_write_bytecode = True
        self.watchdog = Watchdog()
        self.gate = AuditGate(runtime_dirs)
        self.mem_cap = 0
        self.walle = self._walle_module()
        self.types = ReadOnlyModule("walle_types", "The builtin types class patterns match.")
        for name in P["MATCH_SELF_TYPES"]:
            self.types.__dict__[name] = _real_getattr(_builtins, name)
        self.current_log: Log | None = None
        self.runs = 0
        _guard_abc_register()
        self.classes = ClassWatch()  # last: every class the allowed modules define

    def bind_engine(self, task: LoadedTask) -> None:
        """Charge engine tensor memory allocated on this thread during the run to the
        task's account, capped at the run's memory budget. Only once the task has loaded
        walle_engine: tasks that never touch the engine never pay for importing it."""
        wd = self.watchdog
        core = sys.modules.get("walle_engine._core")
        if core is None or not wd.armed or wd.engine_account is not None:
            return
        acct = core.account(task.task_id)
        acct.cap = self.mem_cap
        acct.reset_peak()
        token = core.CancelToken()
        core.bind(acct, token)
        wd.engine_account, wd.engine_token = acct, token

    def unbind_engine(self) -> int | None:
        """Stop charging; the peak tensor bytes of the run, or None if it used no engine."""
        wd = self.watchdog
        acct, wd.engine_account, wd.engine_token = wd.engine_account, None, None
        if acct is None:
            return None
        sys.modules["walle_engine._core"].bind(None, None)
        return int(acct.peak)

    def _walle_module(self) -> types.ModuleType:
        m = ReadOnlyModule("walle", "The task API: write `def run(ctx): ...`.")
        for cls in WALLE_EXCEPTIONS:
            m.__dict__[cls.__name__] = cls
        m.__dict__["__version__"] = "1"
        m.__dict__["__getattr__"] = _missing_attr("walle")
        return m

    def module_proxy(self, name: str, task: LoadedTask) -> types.ModuleType:
        if name == "walle":
            return self.walle
        if name == "random":
            return task.random_module()
        top = name.split(".")[0]
        spec = module_spec(name, task.extra)
        if spec is None:
            raise SandboxViolation(
                f"import of {name!r} is not allowed in tasks; allowed: walle, "
                + ", ".join(sorted(P["ALLOWED_MODULES"]))
                + " (numpy only with isolation 'process')"
            )
        proxy = self.proxies.get(name)
        if proxy is None:
            if top == "numpy" and not self.in_process:
                raise SandboxViolation(
                    "numpy cannot load in an isolated interpreter; "
                    "set config['isolation'] = 'process'"
                )
            source = P["MODULE_SOURCES"].get(name, name)
            __import__(source)
            self.classes.refresh()  # before the task sees any of the new classes
            mod = sys.modules[source]
            if top == "walle_engine":
                self.bind_engine(task)
            denied = P["DENIED_NAMES"].get(name, frozenset()) | (
                P["NUMPY_DENIED"] if top == "numpy" else frozenset()
            )
            proxy = _proxy(name, mod, spec, denied)
            for sub in P["SUBMODULES"].get(name, ()):
                try:
                    proxy.__dict__[sub] = self.module_proxy(f"{name}.{sub}", task)
                except (ImportError, SandboxViolation):
                    pass
            self.proxies[name] = proxy
        return proxy

    def make_builtins(self, task: LoadedTask) -> dict[str, Any]:
        b: dict[str, Any] = {n: _real_getattr(_builtins, n) for n in P["SAFE_BUILTIN_NAMES"]}
        for n in dir(_builtins):
            v = _real_getattr(_builtins, n)
            if isinstance(v, type) and issubclass(v, BaseException):
                b[n] = v
        for n, hint in P["BLOCKED_BUILTINS"].items():
            b[n] = _blocked(n, hint)
        b.update(
            type=SafeType,
            getattr=safe_getattr,
            hasattr=safe_hasattr,
            setattr=safe_setattr,
            delattr=safe_delattr,
            __build_class__=safe_build_class,
            _walle_attr=safe_getattr,
            _walle_store=store_target,
            _walle_types=self.types,
        )
        b["__name__"] = "builtins"

        def print_(*args: Any, sep: str = " ", end: str = "\n", **_: Any) -> None:
            log = self.current_log
            if log is not None:
                log._add("PRINT", (sep.join(a if type(a) is str else str(a) for a in args),))

        b["print"] = print_

        requires = task.extra

        def import_(
            name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0
        ) -> types.ModuleType:
            if level:
                raise SandboxViolation("relative imports are not allowed in tasks")
            if type(name) is not str:
                raise TypeError("module name must be a str")
            if name in task.codes and name != "__task__":
                return task.import_module(name)
            top = name.split(".")[0]
            if (
                module_spec(name, requires) is None
                and module_spec(top, requires) is not None
                and top in P["LIBRARY_PACKAGES"]
            ):
                # C code inside numpy/the engine (e.g. ndarray.sum) imports its own private
                # submodules through the *calling frame's* builtins, i.e. this hook. A task
                # cannot ask for these names itself: the load-time check refuses them in
                # import statements, and __import__ is not reachable by name.
                __import__(name)
                return sys.modules[name if fromlist else top]
            proxy = self.module_proxy(name, task)
            if "." in name and not fromlist:
                return self.module_proxy(name.split(".")[0], task)
            return proxy

        b["__import__"] = import_
        return b

    # ---- one run
    def handle(self, req_bytes: bytes) -> bytes:
        """One run: never raises, whatever the task did (a failure the guest itself could
        not handle asks for a fresh interpreter)."""
        t0 = time.perf_counter()
        try:
            resp = self._handle(marshal.loads(req_bytes))
            resp["guest_ms"] = (time.perf_counter() - t0) * 1000
            return marshal.dumps(resp)
        except BaseException as e:  # a bug here must not take the worker down
            try:  # this thread must not keep charging the engine to the failed run's task
                self.unbind_engine()
            except BaseException:
                pass
            return marshal.dumps(
                {
                    "ok": False,
                    "error_type": "VMError",
                    "message": f"the task guest failed: {_type_name(type(e))}",
                    "traceback": "",
                    "recycle": True,
                }
            )

    def _handle(self, req: dict[str, Any]) -> dict[str, Any]:
        self.runs += 1
        resp: dict[str, Any] = {"ok": False, "guest_start": time.time()}
        if "load" in req:
            spec = req["load"]
            self.tasks[spec["key"]] = LoadedTask(self, spec)
        task = self.tasks.get(req["key"])
        if task is None:
            resp.update(
                error_type="NotLoaded",
                message="task version not loaded in this worker",
                traceback="",
            )
            return resp
        self.mem_cap = int(req.get("max_memory_mb") or 0) << 20
        run = _Run(int(req.get("run_token") or 0), self.mem_cap or TENSOR_BYTES_DEFAULT_CAP)
        log = Log()
        state = State(req.get("state") or {}, int(req.get("state_max_bytes") or 256 * 1024))
        buffers, held = self._buffers(req)
        ctx = _make_context(task, req, run, log, state, buffers, self.watchdog)
        self.current_log = log
        _OWN_NAMES[0] = task.names
        wd = self.watchdog
        wd.arm(float(req["timeout_s"]), self.mem_cap)
        gate = self.gate.begin(task.files.values(), task.import_tops)
        self.bind_engine(task)
        err: BaseException | None = None
        described: tuple[str, str] | None = None
        describing_tripped = False
        try:
            mod = task.main()
            fn = mod.__dict__.get("run")
            if not callable(fn):
                raise TypeError("the task script must define run(ctx)")
            out = fn(ctx)
            # Still under the budget and the gate: the return value is checked and copied
            # here, capped on its expanded size before anything large is built from it.
            resp["output"] = plain(out, "run(ctx) return value", OUTPUT_MAX_BYTES)
            del out
            resp["state"] = state._delta()
        except BaseException as e:
            err = e
            # Described here, still under the budget and the audit gate: str() of an
            # exception may run task code (its own __str__, or a builtin exception's
            # attributes: OSError's filename, SyntaxError's msg), which must not run
            # once the budget is off. A budget that trips only while describing leaves
            # the error as it was (described from its arguments).
            tripped = wd.pending is not None
            described = _describe(err)
            describing_tripped = not tripped and wd.pending is not None
        finally:
            wd.live = False
            fired = wd.disarm()
            self.gate.end(gate)
            self.current_log = None
            _OWN_NAMES[0] = frozenset()
        budget_errors = (TaskTimeout, MemoryBudgetExceeded)
        # issubclass(type(e)), not isinstance(e): isinstance may read a task-defined
        # __class__ property, and no task code may run once the budget is off.
        if (
            fired is not None
            and not describing_tripped
            and (err is None or not issubclass(type(err), budget_errors))
        ):
            err, described = fired, None  # tripped: the task caught it or returned through us
        if describing_tripped:
            resp["recycle"] = True  # the interrupt may have landed in library code
        changed = self.classes.changed()
        self.classes.refresh()  # modules library code imported during the run
        if changed:
            err = SandboxViolation(
                f"the run changed {changed}, which every task in this interpreter shares; "
                "the interpreter is replaced"
            )
            described = None
            resp["recycle"] = True
        if err is None:
            resp["tensors"] = {name: item for name, (item, _) in run.tensors.items()}
            resp["uploads"] = run.uploads
            resp["ok"] = True
        else:
            name, message = described or _describe(err, run_task_code=False)
            resp.update(error_type=name, message=message, traceback=_format_tb(err, name, message))
            resp.pop("output", None)
            resp.pop("state", None)
            if issubclass(type(err), budget_errors):
                resp["budget"] = name
            _drop_exported(run.tensors, run.token)
            # The traceback holds the task's frames (and whatever they allocated) in a
            # cycle through this frame; break it so a failed run frees its memory now.
            err = None
        peak = self.unbind_engine()
        if peak is not None:
            resp["engine_peak_bytes"] = peak
        resp["logs"] = log._lines + (
            [f"WARNING {log._dropped} log lines dropped"] if log._dropped else []
        )
        # The host's buffers must not outlive the run: a task that kept a view of one
        # (or an array or tensor over it) in a global would read whatever the host puts
        # there later, and keeps the host from resizing it. Its interpreter goes instead.
        del ctx, buffers
        if held and not _released(held):
            resp["recycle"] = resp["held_buffers"] = True
            resp["logs"].append(
                "WARNING the task kept a reference to ctx.buffers after the run; its "
                "interpreter is replaced (copy what you need with bytes(view))"
            )
        return resp

    @staticmethod
    def _buffers(req: dict[str, Any]) -> tuple[dict[str, memoryview], list[Any]]:
        """The run's read-only views, and the host objects behind them (interpreter backend:
        the cross-interpreter buffers, to check after the run that nothing holds them)."""
        names = req.get("buffers") or []
        if "buffer_data" in req:  # process backend: they came over the pipe
            return {n: memoryview(req["buffer_data"][n]).toreadonly() for n in names}, []
        main = sys.modules["__main__"]
        views, held = {}, []
        for i, name in enumerate(names):
            attr = f"_walle_buf{i}"
            shared = getattr(main, attr)
            views[name] = memoryview(shared).toreadonly()
            # The object behind the host's buffer: it stays referenced (by the views'
            # shared buffer) exactly as long as any view, array or tensor over it lives.
            held.append(shared.obj)
            delattr(main, attr)  # the run's ctx holds the only reference
        return views, held

    def shutdown(self) -> None:
        # Drop every task object while a budget is armed: finalizers a task smuggled in
        # (cycles hold generators) then run here, where the watchdog can interrupt them,
        # and not inside interpreter destruction, where a loop would hang the thread
        # destroying it.
        wd = self.watchdog
        wd.arm(SHUTDOWN_BUDGET_S, 0)
        gate = self.gate.begin((), frozenset())
        try:
            for task in self.tasks.values():
                for mod in task.modules.values():
                    sys.modules.pop(mod.__name__, None)
                    mod.__dict__.clear()
                task.modules.clear()
                task.models.clear()
            self.tasks.clear()
            gc.collect()
        except BaseException:  # interrupted finalizers: keep going, the interpreter goes
            pass
        finally:
            wd.live = False
            wd.disarm()
            self.gate.end(gate)
        wd.stop()


# Names and dicts of classes read through type's own descriptors: a task class cannot
# define __name__, __module__ or __mro__ as properties that run its code.
_type_name = type.__dict__["__name__"].__get__
_type_module = type.__dict__["__module__"].__get__
_type_mro = type.__dict__["__mro__"].__get__
_type_dict = type.__dict__["__dict__"].__get__
_type_flags = type.__dict__["__flags__"].__get__
_exc_args = BaseException.__dict__["args"].__get__
_exc_tb = BaseException.__dict__["__traceback__"].__get__
_proxy_values = types.MappingProxyType.values
_chain = itertools.chain.from_iterable
_is = operator.is_
_IMMUTABLE_TYPE = 1 << 8  # Py_TPFLAGS_IMMUTABLETYPE: setattr on such a class always fails
MESSAGE_MAX_CHARS = 4000
TRACEBACK_FRAMES = 30


def _describe(err: BaseException, run_task_code: bool = True) -> tuple[str, str]:
    """The error's type name and message. With `run_task_code` (under the run's budget and
    audit gate) the message is str(err), which may call the task's __str__ or format a
    builtin exception's attributes; without it (the budget is off) only the exception's
    plain arguments are shown, and no task code runs."""
    name = _type_name(type(err))
    if run_task_code:
        try:
            text = str(err)
            # A str subclass's own methods must not run later: keep an exact copy.
            return name, str.__str__(text)[:MESSAGE_MAX_CHARS]
        except BaseException:  # its __str__ failed, or the budget interrupted it
            pass
    parts = []
    for a in _exc_args(err):
        kind = _real_type(a)
        if kind is str:
            parts.append(a)
        elif kind is int and a.bit_length() > 4096:
            parts.append(f"<int of {a.bit_length()} bits>")
        elif kind in (int, float, bool, bytes) or a is None:
            parts.append(repr(a))
        else:
            parts.append(f"<{_type_name(kind)} not shown>")
    return name, ", ".join(parts)[:MESSAGE_MAX_CHARS]


def _format_tb(err: BaseException, name: str, message: str) -> str:
    """The task's part of the traceback: its last TRACEBACK_FRAMES frames, one line of
    source each. Runs after the budget, so it is bounded and runs no task code (no
    column carets: they re-parse every frame's source)."""
    import collections
    import linecache

    last: collections.deque[Any] = collections.deque(maxlen=TRACEBACK_FRAMES)
    tb = _exc_tb(err)
    while tb is not None:
        if tb.tb_frame.f_code.co_filename != GUEST_FILE:
            last.append(tb)
        tb = tb.tb_next
    lines = []
    for tb in last:
        code = tb.tb_frame.f_code
        lines.append(f'  File "{code.co_filename}", line {tb.tb_lineno}, in {code.co_name}\n')
        text = linecache.getline(code.co_filename, tb.tb_lineno).strip()
        if text:
            lines.append(f"    {text[:200]}\n")
    head = "Traceback (most recent call last):\n" if lines else ""
    module = _type_module(type(err))
    qual = (
        name
        if module in ("builtins", "walle") or module.startswith("walle_task.")
        else f"{module}.{name}"
    )
    return head + "".join(lines) + f"{qual}: {message}\n"


def _released(held: list[Any]) -> bool:
    """True when nothing but `held` refers to the host's buffers any more."""
    for _ in range(2):
        # Two references when released: `held`'s, and getrefcount's argument.
        if all(sys.getrefcount(held[i]) <= 2 for i in range(len(held))):
            return True
        gc.collect()  # a failed run's frames may hold views in a cycle
    return False


def _initializing(module: Any) -> bool:
    """A module the import system is executing right now (its classes are still being
    built), never a loaded, shared one."""
    spec = _real_getattr(sys.modules.get(module), "__spec__", None)
    return _real_getattr(spec, "_initializing", False) is True


class ClassWatch:
    """The run-time layer for shared classes. CPython raises no audit event when a class
    attribute is set, and stdlib code can set one on a task's behalf (typing's aliases
    forward stores to their origin class), so after every run the guest compares the
    dict of every class that other tasks share (every mutable class of every non-task
    module, ~650) with its snapshot: the same keys, and the same objects compared by
    identity (operator.is_, in C: no task code, no audit event). A run that changed one
    fails, and its interpreter is replaced before another task can run there. It costs
    about 0.3 ms per run (~7,500 entries; a no-op run went from 0.2 to 0.5 ms here).
    """

    # Caches the stdlib itself adds to a class it is asked to copy (copyreg).
    BENIGN_KEYS = frozenset({"__slotnames__"})

    def __init__(self) -> None:
        self.classes: list[Any] = []
        self.dicts: list[Any] = []  # the classes' mappingproxies, live
        self.lengths: list[int] = []
        self.keys: list[str] = []  # all the dicts' keys, one flat list
        self.values: list[Any] = []  # and their values, kept alive
        self.seen: set[int] = set()
        self.modules = 0
        self.refresh()

    def task_module(self, change: int) -> None:
        """A task's own module just entered (+1) or left (-1) sys.modules. It holds no
        shared class, so when nothing else changed meanwhile the next refresh() has nothing
        to rescan: without this, every task's first run rescanned every module, ~1.8 ms
        of a 2.3 ms first run, and more with every task loaded."""
        if len(sys.modules) == self.modules + change:
            self.modules += change

    def refresh(self) -> None:
        """Snapshot the classes of modules imported since the last call."""
        if len(sys.modules) == self.modules:
            return
        self.modules = len(sys.modules)
        for name, mod in list(sys.modules.items()):
            if name.startswith("walle_task.") or mod is None:
                continue
            stack = list(_real_getattr(mod, "__dict__", {}).values())
            while stack:
                cls = stack.pop()
                if not issubclass(_real_type(cls), _real_type) or id(cls) in self.seen:
                    continue
                if _type_flags(cls) & _IMMUTABLE_TYPE or _owned(cls):
                    continue
                self.seen.add(id(cls))
                self.classes.append(cls)
                self.dicts.append(_type_dict(cls))
                stack.extend(_type_dict(cls).values())
        self._snapshot()

    def _snapshot(self) -> None:
        self.lengths = list(map(len, self.dicts))
        self.keys = list(_chain(self.dicts))
        self.values = list(_chain(map(_proxy_values, self.dicts)))

    def changed(self) -> str:
        """The name of a shared class a run changed ("" if none); benign changes are taken
        into the snapshot."""
        if list(_chain(self.dicts)) == self.keys and all(
            map(_is, _chain(map(_proxy_values, self.dicts)), self.values)
        ):
            return ""
        start = 0
        for cls, d, n in zip(self.classes, self.dicts, self.lengths, strict=True):
            old = dict(
                zip(self.keys[start : start + n], self.values[start : start + n], strict=True)
            )
            start += n
            diff = {k for k in old.keys() | d.keys() if old.get(k, _MISSING) is not d.get(k)}
            if diff and not diff <= self.BENIGN_KEYS:
                return (
                    f"the class {_type_module(cls)}.{_type_name(cls)} ({', '.join(sorted(diff))})"
                )
        self._snapshot()
        return ""


def _guard_abc_register() -> None:
    """ABCMeta.register changes an ABC's registry, which other tasks' isinstance() checks
    read: while a run is open, only the task's own classes may be registered (or the
    classes of a module being imported, as numpy does with numbers.Integral)."""
    import abc

    real = abc.ABCMeta.register

    def register(cls: Any, subclass: Any) -> Any:
        wd = _GUEST.watchdog if _GUEST is not None else None
        if (
            wd is not None
            and wd.live
            and not (
                _owned(cls)
                or (
                    isinstance(subclass, _real_type)
                    and (_owned(subclass) or _initializing(_type_module(subclass)))
                )
            )
        ):
            raise SandboxViolation(
                f"registering a class with {_type_name(cls)} would change isinstance() for "
                "every task in this interpreter; register your own classes only"
            )
        return real(cls, subclass)

    register.__doc__ = real.__doc__
    _real_type.__setattr__(abc.ABCMeta, "register", register)


_GUEST: Guest | None = None


def init(
    in_process: bool = False,
    policy: dict[str, Any] | None = None,
    runtime_dirs: tuple[str, ...] = (),
) -> Guest:
    """Create the per-interpreter guest (idempotent) with the sandbox policy's data."""
    global _GUEST
    if _GUEST is None:
        if policy is not None:
            P.clear()
            P.update(policy)
        if not P:
            raise ValueError("guest.init() needs the sandbox policy (policy.as_data())")
        _GUEST = Guest(in_process, tuple(runtime_dirs))
    return _GUEST


def handle(req_bytes: bytes) -> bytes:
    assert _GUEST is not None, "guest.init() first"
    return _GUEST.handle(req_bytes)


def shutdown() -> None:
    global _GUEST
    if _GUEST is not None:
        _GUEST.shutdown()
        _GUEST = None
