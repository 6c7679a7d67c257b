"""The code that runs inside every task interpreter: the `walle` task API, the runtime half
of the sandbox, the budget watchdog and the request handler.

This file is deliberately self-contained (stdlib only, no package-relative imports): the
sub-interpreter backend executes its compiled code directly in a fresh isolated
interpreter without importing `walle_device`, and the process backend imports it as a
normal module in a spawned child. Everything that crosses the boundary is `marshal` bytes
of plain data (None, bool, int, float, str, bytes, list, tuple, dict), produced here by
trusted code from exact builtin types only, so a task object never runs code on the host.
"""

from __future__ import annotations

import copy
import functools
import gc
import marshal
import os
import sys
import threading
import time
import traceback
import types
from _thread import get_ident
from typing import Any

GUEST_FILE = (lambda: 0).__code__.co_filename
MONITOR_TOOL = 4  # sys.monitoring tool ids 0-2 and 5 are named for debuggers etc.; 4 is free
WATCHDOG_TICK_S = 0.01
LOG_MAX_LINES = 200
LOG_MAX_CHARS = 2000
UPLOAD_MAX_BYTES = 1 << 20
TENSORS_MAX = 64
OUTPUT_MAX_BYTES = 4 << 20
PLAIN_MAX_DEPTH = 64
PLAIN_MAX_ITEMS = 1_000_000
READ_MAX_BYTES = 64 << 20
SHUTDOWN_BUDGET_S = 1.0
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _open_statm() -> int | None:
    try:
        return os.open("/proc/self/statm", os.O_RDONLY)
    except OSError:  # not Linux: the memory budget is off, the process backend's rlimit is not
        return None


# --------------------------------------------------------------------------- exceptions
class SandboxViolation(Exception):
    """The task tried something the sandbox does not allow (import, builtin, attribute)."""


class TaskTimeout(BaseException):
    """The run exceeded its wall-time budget. BaseException so `except Exception` misses it."""


class MemoryBudgetExceeded(BaseException):
    """The process grew by more than the run's memory budget while the run was going."""


class StateFull(Exception):
    """`ctx.state` would exceed the task's byte cap."""


class ModelUnavailable(RuntimeError):
    """`ctx.model()` cannot load: no such bundle file, or walle_engine is not installed."""


for _cls in (SandboxViolation, TaskTimeout, MemoryBudgetExceeded, StateFull, ModelUnavailable):
    _cls.__module__ = "walle"  # tracebacks read "walle.TaskTimeout", the name tasks import


# --------------------------------------------------------------------------- plain data
def plain(obj: Any, what: str = "value") -> Any:
    """Return a copy of `obj` made only of exact builtin data types, or raise TypeError.

    Bounded in depth and in the number of containers' items, because it runs in guest code
    that the budget cannot interrupt."""
    return _plain(obj, what, 0, [PLAIN_MAX_ITEMS])


def _plain(obj: Any, what: str, depth: int, left: list[int]) -> Any:
    if depth > PLAIN_MAX_DEPTH:
        raise TypeError(f"{what} is nested deeper than {PLAIN_MAX_DEPTH} levels")
    t = type(obj)
    # Exact type checks on purpose: a subclass could run task code during encoding.
    if obj is None or t is bool or t is int or t is float or t is str or t is bytes:
        return obj
    if t is bytearray or t is memoryview:
        return bytes(obj)
    if t is list or t is tuple or t is dict:
        left[0] -= len(obj)
        if left[0] < 0:
            raise TypeError(f"{what} holds more than {PLAIN_MAX_ITEMS} items in all")
    if t is list or t is tuple:
        items = [_plain(v, what, depth + 1, left) for v in obj]
        return items if t is list else tuple(items)
    if t is dict:
        out = {}
        for k, v in obj.items():
            tk = type(k)
            if not (tk is str or tk is int or tk is float or tk is bool or k is None):
                raise TypeError(
                    f"{what}: dict keys must be str/int/float/bool/None, got {tk.__name__}"
                )
            out[k] = _plain(v, what, depth + 1, left)
        return out
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
                if self.mem_cap and self._rss() - self.mem_base > self.mem_cap:
                    self._fire(
                        MemoryBudgetExceeded(
                            f"the process grew by more than {self.mem_cap >> 20} MiB during the run"
                            " (config max_memory_mb)"
                        )
                    )
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

    def _rss(self) -> int:
        # sys.getallocatedblocks() would be per-interpreter in spirit, but in 3.13 it sums
        # the arenas of *every* interpreter without their GILs and crashed here under
        # load; the per-interpreter counter is not exported. Process RSS growth since the
        # run started is the honest approximation (see docs/task-authoring.md).
        assert self.statm is not None
        return int(os.pread(self.statm, 64, 0).split()[1]) * PAGE_SIZE


# --------------------------------------------------------------------------- sandbox (runtime half)
# Attribute names that lead from ordinary objects to frames, code, globals or builtins.
# Anything starting with "_" is refused as well (see attr_allowed).
BLOCKED_ATTRS = frozenset(
    {
        "gi_frame",
        "gi_code",
        "gi_yieldfrom",
        "cr_frame",
        "cr_code",
        "cr_await",
        "cr_origin",
        "ag_frame",
        "ag_code",
        "ag_await",
        "tb_frame",
        "tb_next",
        "tb_lasti",
        "f_back",
        "f_globals",
        "f_locals",
        "f_builtins",
        "f_code",
        "f_trace",
        "f_lasti",
        "tofile",
        "dump",  # ndarray.dump(path) writes a pickle file
        "ctypes",  # ndarray.ctypes hands out raw pointers
        "func_globals",
        "func_code",
    }
)
SAFE_DUNDERS = frozenset({"__name__", "__qualname__", "__doc__", "__module__", "__init__"})
# namedtuple's public API is spelled with one underscore; nothing behind it leads out.
SAFE_PRIVATE = frozenset({"_asdict", "_replace", "_fields", "_make", "_field_defaults"})


def attr_allowed(name: str) -> bool:
    if name.startswith("_"):
        return name in SAFE_DUNDERS or name in SAFE_PRIVATE
    return name not in BLOCKED_ATTRS and not name.startswith("co_")


def _check_attr(name: Any) -> None:
    if type(name) is not str:
        raise TypeError("attribute name must be a string")
    if not attr_allowed(name):
        raise SandboxViolation(
            f"access to attribute {name!r} is not allowed in tasks "
            "(names starting with '_' and frame/code attributes are blocked)"
        )


_MISSING = object()
_real_getattr = getattr


# Attribute loads the load-time check rewrites into safe_getattr calls, because what they
# return depends on the object: str.format does attribute lookups of its own, and a
# memoryview's .obj is the cross-interpreter buffer object, which CPython 3.13.0 crashes
# on when it is exported a second time (reproduced here).
GUARDED_ATTRS = frozenset({"format", "format_map", "obj"})


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


def safe_setattr(obj: Any, name: str, value: Any) -> None:
    _check_store(name)
    setattr(obj, name, value)


def safe_delattr(obj: Any, name: str) -> None:
    _check_store(name)
    delattr(obj, name)


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


def fmt_attr(obj: Any, name: str) -> Any:
    """Target of the load-time rewrite of `x.format` / `x.format_map` in task code."""
    if type(obj) is str or isinstance(obj, str):
        return functools.partial(_real_getattr(_FORMATTER, name), obj)
    if obj is str:
        return _real_getattr(_FORMATTER, name)
    return _real_getattr(obj, name)


def _blocked(name: str, hint: str) -> Any:
    def refuse(*_a: Any, **_k: Any) -> Any:
        raise SandboxViolation(f"{name}() is not available in tasks: {hint}")

    refuse.__name__ = name
    return refuse


BLOCKED_BUILTINS = {
    "open": "tasks have no file access; read bundle files with ctx.model() or ctx.files",
    "eval": "dynamic code is not allowed",
    "exec": "dynamic code is not allowed",
    "compile": "dynamic code is not allowed",
    "globals": "introspection is not allowed",
    "locals": "introspection is not allowed",
    "vars": "introspection is not allowed",
    "input": "tasks have no console",
    "breakpoint": "tasks cannot be debugged interactively",
    "help": "tasks have no console",
    "exit": "return from run(ctx) instead",
    "quit": "return from run(ctx) instead",
}
SAFE_BUILTIN_NAMES = (
    "abs all any ascii bin bool bytearray bytes callable chr classmethod complex dict divmod "
    "enumerate filter float format frozenset hash hex id int isinstance issubclass iter len "
    "list map max min next object oct ord pow property range repr reversed round set slice "
    "sorted staticmethod str sum super tuple type zip memoryview aiter anext dir "
    "NotImplemented Ellipsis __build_class__"
).split()

# module -> "*" (every public, non-module attribute) or the exact names offered.
ALLOWED_MODULES: dict[str, Any] = {
    "math": "*",
    "cmath": "*",
    "statistics": "*",
    "itertools": "*",
    "heapq": "*",
    "bisect": "*",
    "collections.abc": "*",
    "collections": {
        "namedtuple",
        "deque",
        "Counter",
        "OrderedDict",
        "defaultdict",
        "ChainMap",
        "UserDict",
        "UserList",
        "UserString",
    },
    "functools": {
        "reduce",
        "partial",
        "partialmethod",
        "lru_cache",
        "cache",
        "cmp_to_key",
        "total_ordering",
        "cached_property",
    },
    "json": {"dumps", "loads", "JSONDecodeError"},
    "re": {
        "compile",
        "match",
        "search",
        "fullmatch",
        "findall",
        "finditer",
        "sub",
        "subn",
        "split",
        "escape",
        "error",
        "Pattern",
        "Match",
        "IGNORECASE",
        "I",
        "MULTILINE",
        "M",
        "DOTALL",
        "S",
        "VERBOSE",
        "X",
        "ASCII",
        "A",
        "UNICODE",
        "U",
        "NOFLAG",
    },
    "time": {
        "time",
        "time_ns",
        "monotonic",
        "monotonic_ns",
        "perf_counter",
        "perf_counter_ns",
        "sleep",
        "gmtime",
        "localtime",
        "mktime",
        "strftime",
        "struct_time",
    },
    "random": {
        "random",
        "randint",
        "randrange",
        "choice",
        "choices",
        "shuffle",
        "sample",
        "uniform",
        "gauss",
        "normalvariate",
        "lognormvariate",
        "expovariate",
        "betavariate",
        "gammavariate",
        "triangular",
        "vonmisesvariate",
        "paretovariate",
        "weibullvariate",
        "seed",
        "getrandbits",
        "Random",
        "binomialvariate",
    },
    "dataclasses": {
        "dataclass",
        "field",
        "fields",
        "asdict",
        "astuple",
        "replace",
        "is_dataclass",
        "FrozenInstanceError",
        "KW_ONLY",
        "InitVar",
    },
    "typing": {
        "Any",
        "Optional",
        "Union",
        "List",
        "Dict",
        "Tuple",
        "Set",
        "FrozenSet",
        "Iterable",
        "Iterator",
        "Callable",
        "Sequence",
        "Mapping",
        "MutableMapping",
        "TypeVar",
        "Generic",
        "NamedTuple",
        "TypedDict",
        "Literal",
        "Final",
        "ClassVar",
        "Protocol",
        "cast",
        "overload",
        "Self",
        "TypeAlias",
        "Deque",
        "DefaultDict",
        "Counter",
        "Generator",
        "NoReturn",
        "Never",
    },
    "datetime": {"date", "datetime", "time", "timedelta", "timezone", "MINYEAR", "MAXYEAR", "UTC"},
    "fractions": {"Fraction"},
    "copy": {"copy", "deepcopy"},
    "operator": "*",
    "__future__": {"annotations"},
}
# Where an allowed name really comes from. CPython 3.13.0's C `_datetime` keeps static
# state shared between interpreters: with it loaded in two isolated interpreters,
# destroying one aborts the process (munmap_chunk(): invalid pointer), reproduced here.
# The pure-Python implementation is the same API and isolation-safe.
MODULE_SOURCES = {"datetime": "_pydatetime"}
# Public names refused even under "*": they read attributes by a runtime string.
DENIED_NAMES = {"operator": {"attrgetter", "methodcaller"}}
SUBMODULES = {
    "collections": ("abc",),
    "walle_engine": ("ops", "np", "cv"),
    "numpy": ("linalg", "fft", "random"),
}
# The engine facade minus what touches files or process-wide settings (load, convert,
# import/export_profile, set_isa, set_num_threads): tasks get models through ctx.model().
ENGINE_MODULES: dict[str, Any] = {
    "walle_engine": {
        "Tensor",
        "TensorInfo",
        "Model",
        "isa",
        "detect_isa",
        "cpu_signature",
        "supported_isas",
        "supported_ops",
        "num_threads",
    },
    "walle_engine.ops": "*",
    "walle_engine.np": "*",
    "walle_engine.cv": "*",
}
# Offered only with config["requires"] = ["numpy"], i.e. in the process backend (numpy
# refuses to load in isolated interpreters).
NUMPY_MODULES: dict[str, Any] = {
    "numpy": "*",
    "numpy.linalg": "*",
    "numpy.fft": "*",
    "numpy.random": "*",
}
NUMPY_DENIED = {
    "load",
    "save",
    "savez",
    "savez_compressed",
    "fromfile",
    "loadtxt",
    "savetxt",
    "genfromtxt",
    "memmap",
    "ctypeslib",
    "lib",
    "DataSource",
    "f2py",
    "testing",
    "distutils",
    "fromregex",
    "show_config",
    "info",
}


# Packages whose own C code may import their private submodules while a task runs.
LIBRARY_PACKAGES = frozenset({"numpy", "walle_engine"})


def module_spec(name: str, requires: frozenset[str]) -> Any:
    """What a task may see of module `name` ("*" or a set of names), or None if refused."""
    spec = ALLOWED_MODULES.get(name) or ENGINE_MODULES.get(name)
    if spec is None and "numpy" in requires:
        spec = NUMPY_MODULES.get(name)
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


class ReadOnlyModule(types.ModuleType):
    """Module proxies are shared by the tasks of one interpreter: refuse monkeypatching."""

    def __setattr__(self, name: str, value: Any) -> None:
        raise SandboxViolation(f"module {self.__name__!r} is read-only in tasks")

    def __delattr__(self, name: str) -> None:
        raise SandboxViolation(f"module {self.__name__!r} is read-only in tasks")


class Sealed(type):
    """Metaclass of the task API classes: another task in the same interpreter must not be
    able to replace `ctx.state.get` or `ctx.upload` on the class and see its data."""

    def __setattr__(cls, name: str, value: Any) -> None:
        raise SandboxViolation(f"the class {cls.__name__} is read-only in tasks")

    def __delattr__(cls, name: str) -> None:
        raise SandboxViolation(f"the class {cls.__name__} is read-only in tasks")


def _proxy(
    name: str, mod: Any, spec: Any, denied: set[str] | frozenset[str] = frozenset()
) -> types.ModuleType:
    """A fresh, read-only module object holding only the allowed attributes of `mod`."""
    proxy = ReadOnlyModule(name, getattr(mod, "__doc__", None))
    names = [n for n in dir(mod) if not n.startswith("_")] if spec == "*" else spec
    for n in names:
        if n in denied:
            continue
        try:
            v = getattr(mod, n)
        except Exception:  # missing, or a lazy attribute that cannot load here (numpy)
            continue
        if isinstance(v, types.ModuleType):
            continue  # a module attribute would hand out os/sys/codecs behind the allowlist
        proxy.__dict__[n] = v
    if name == "time":
        proxy.__dict__["sleep"] = _budget_sleep

    proxy.__dict__["__getattr__"] = _missing_attr(name)
    return proxy


def _missing_attr(module: str) -> Any:
    def __getattr__(attr: str) -> Any:
        # Not AttributeError: on AttributeError `from json import decoder` falls back to
        # sys.modules["json.decoder"], which would hand out the real module.
        raise SandboxViolation(f"{module}.{attr} is not available in tasks (sandbox allowlist)")

    return __getattr__


# --------------------------------------------------------------------------- task API
class Log(metaclass=Sealed):
    """`ctx.log`: call it or use .info/.warning/.error; lines go back with the result."""

    # Internals start with "_" so the sandbox's attribute rule hides them from the task.
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
    between runs. Only the keys a run changes are sent back (last writer wins per key)."""

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
        return len(key.encode()) + len(marshal.dumps(value))

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
    """The object passed to a task's `run(ctx)`."""

    def __init__(
        self,
        task: LoadedTask,
        req: dict[str, Any],
        watchdog: Watchdog,
        buffers: dict[str, memoryview],
    ) -> None:
        self.task_id: str = task.task_id
        self.config: dict[str, Any] = copy.deepcopy(task.config)
        self.inputs: dict[str, Any] = req.get("inputs") or {}
        self.window: list[dict[str, Any]] | None = req.get("window")
        self.device: dict[str, Any] = req.get("device") or {}
        self.buffers: dict[str, memoryview] = buffers
        self.state = State(
            req.get("state") or {}, int(task.config.get("state_max_bytes", 256 * 1024))
        )
        self.log = Log()
        self.files: tuple[str, ...] = tuple(sorted(task.files))
        self._uploads: list[Any] = []
        self._upload_bytes = 0
        self._tensors: dict[str, Any] = {}
        self._task = task
        self._watchdog = watchdog

    def upload(self, payload: Any) -> None:
        """Queue `payload` (plain data) for the tunnel; it leaves with the run result."""
        payload = plain(payload, "ctx.upload() payload")
        size = len(marshal.dumps(payload))
        if self._upload_bytes + size > UPLOAD_MAX_BYTES:
            raise ValueError(f"uploads of one run are capped at {UPLOAD_MAX_BYTES} bytes")
        self._upload_bytes += size
        self._uploads.append(payload)

    def model(self, name: str) -> Any:
        """Load (once per interpreter) the bundle's model file `name` with walle_engine."""
        return self._task.model(name)

    def return_tensor(self, name: str, array: Any) -> None:
        """Hand an engine array (a `walle_engine.np` array or a Tensor) to the device
        runtime as `RunResult.tensors[name]`: by handle, without a copy (copied once in the
        process backend). Kept only if the run succeeds; until the runtime frees it, the
        memory stays charged to this task."""
        if type(name) is not str:
            raise TypeError("tensor name must be a str")
        core = sys.modules.get("walle_engine._core")
        np_mod = sys.modules.get("walle_engine.np")
        if core is not None and type(array) is core.Tensor:
            t = array
        elif np_mod is not None and type(array) is np_mod.ndarray:
            t = array.tensor
        else:
            raise TypeError(
                f"ctx.return_tensor() takes a walle_engine.np array or Tensor, got {type(array).__name__}"
            )
        if name not in self._tensors and len(self._tensors) >= TENSORS_MAX:
            raise ValueError(f"a run may return at most {TENSORS_MAX} tensors")
        if self._task.guest.in_process:  # another process: the bytes travel
            self._tensors[name] = (t.dtype, tuple(t.shape), bytes(memoryview(t)))
            return
        old = self._tensors.get(name)
        self._tensors[name] = core.export_tensor(t)
        if old is not None:
            core.drop_exported(old)

    def read(self, name: str) -> bytes:
        """The bytes of a (non-code) file from the task's bundle, e.g. a vocabulary."""
        return self._task.read(name)

    def time_left(self) -> float:
        """Seconds left in this run's wall-time budget."""
        return max(0.0, self._watchdog.remaining())


def _drop_exported(tensors: dict[str, Any] | None) -> None:
    """Free tensors handed over by ctx.return_tensor() that the host will never import."""
    core = sys.modules.get("walle_engine._core")
    for handle in (tensors or {}).values():
        if type(handle) is int and core is not None:  # not the process backend's bytes
            core.drop_exported(handle)


# --------------------------------------------------------------------------- tasks and runs
class LoadedTask:
    """A task's compiled modules plus its per-interpreter caches (module globals, models)."""

    def __init__(self, guest: Guest, spec: dict[str, Any]) -> None:
        self.task_id: str = spec["task_id"]
        self.key: str = spec["key"].replace(".", "_")
        self.config: dict[str, Any] = spec["config"]
        self.files: dict[str, str] = spec["paths"]  # bundle file name -> path on the host
        self.codes: dict[str, bytes] = spec["codes"]  # module name -> marshal'ed code
        self.sources: dict[str, str] = spec["sources"]  # filename -> source, for tracebacks
        self.guest = guest
        self.modules: dict[str, types.ModuleType] = {}
        self.models: dict[str, Any] = {}
        self.extra = set(self.config.get("requires") or ())
        self.builtins = guest.make_builtins(self)
        for filename, src in self.sources.items():
            import linecache

            lines = src.splitlines(keepends=True)
            linecache.cache[filename] = (len(src), None, lines, filename)

    def import_module(self, name: str) -> types.ModuleType:
        mod = self.modules.get(name)
        if mod is None:
            # A unique name in sys.modules: dataclasses resolves string annotations through
            # sys.modules[cls.__module__], and no real module is called "walle_task.*".
            qualname = f"walle_task.{self.key}.{name}"
            mod = types.ModuleType(qualname)
            mod.__dict__["__builtins__"] = self.builtins
            self.modules[name] = mod
            sys.modules[qualname] = mod
            try:
                exec(marshal.loads(self.codes[name]), mod.__dict__)
            except BaseException:
                del self.modules[name]
                sys.modules.pop(qualname, None)
                raise
        return mod

    def main(self) -> types.ModuleType:
        return self.import_module("__task__")

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
    """Per-interpreter singleton: loaded tasks, module proxies, watchdog."""

    def __init__(self, in_process: bool) -> None:
        self.in_process = in_process
        self.tasks: dict[str, LoadedTask] = {}
        self.proxies: dict[str, types.ModuleType] = {}
        # Pre-import the allowlist at boot (off the hot path: the pool boots interpreters
        # ahead of need) so an import inside a task is a dict lookup, not a file-system
        # walk while the task's budget runs. walle_engine stays lazy: not every task uses it.
        for name in ALLOWED_MODULES:
            __import__(MODULE_SOURCES.get(name, name))
        self.watchdog = Watchdog()
        self.mem_cap = 0
        self.walle = self._walle_module()
        self.current_log: Log | None = None
        self.runs = 0

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
        for cls in (
            SandboxViolation,
            TaskTimeout,
            MemoryBudgetExceeded,
            StateFull,
            ModelUnavailable,
        ):
            m.__dict__[cls.__name__] = cls
        m.__dict__["__version__"] = "1"
        m.__dict__["__getattr__"] = _missing_attr("walle")
        return m

    def module_proxy(self, name: str, task: LoadedTask) -> types.ModuleType:
        if name == "walle":
            return self.walle
        key = name
        top = name.split(".")[0]
        spec = module_spec(name, frozenset(task.extra))
        if spec is None:
            raise SandboxViolation(
                f"import of {name!r} is not allowed in tasks; allowed: walle, "
                + ", ".join(sorted(ALLOWED_MODULES))
                + " (numpy only with isolation 'process')"
            )
        proxy = self.proxies.get(key)
        if proxy is None:
            if top == "numpy" and not self.in_process:
                raise SandboxViolation(
                    "numpy cannot load in an isolated interpreter; "
                    "set config['isolation'] = 'process'"
                )
            source = MODULE_SOURCES.get(name, name)
            __import__(source)
            mod = sys.modules[source]
            if top == "walle_engine":
                self.bind_engine(task)
            denied = DENIED_NAMES.get(name, set()) | (NUMPY_DENIED if top == "numpy" else set())
            proxy = _proxy(name, mod, spec, denied)
            for sub in SUBMODULES.get(name, ()):
                try:
                    proxy.__dict__[sub] = self.module_proxy(f"{name}.{sub}", task)
                except (ImportError, SandboxViolation):
                    pass
            self.proxies[key] = proxy
        return proxy

    def make_builtins(self, task: LoadedTask) -> dict[str, Any]:
        import builtins as real

        b: dict[str, Any] = {n: getattr(real, n) for n in SAFE_BUILTIN_NAMES}
        for n in dir(real):
            v = getattr(real, n)
            if isinstance(v, type) and issubclass(v, BaseException):
                b[n] = v
        for n, hint in BLOCKED_BUILTINS.items():
            b[n] = _blocked(n, hint)
        b.update(
            getattr=safe_getattr,
            hasattr=safe_hasattr,
            setattr=safe_setattr,
            delattr=safe_delattr,
            _walle_attr=safe_getattr,
        )
        b["__name__"] = "builtins"

        def print_(*args: Any, sep: str = " ", end: str = "\n", **_: Any) -> None:
            log = self.current_log
            if log is not None:
                log._add("PRINT", (sep.join(a if type(a) is str else str(a) for a in args),))

        b["print"] = print_

        requires = frozenset(task.extra)

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
                and top in LIBRARY_PACKAGES
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
        t0 = time.perf_counter()
        req = marshal.loads(req_bytes)
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
            return marshal.dumps(resp)
        ctx = Context(task, req, self.watchdog, self._buffers(req))
        self.current_log = ctx.log
        wd = self.watchdog
        self.mem_cap = int(req.get("max_memory_mb") or 0) << 20
        wd.arm(float(req["timeout_s"]), self.mem_cap)
        self.bind_engine(task)
        try:
            mod = task.main()
            fn = mod.__dict__.get("run")
            if not callable(fn):
                raise TypeError("the task script must define run(ctx)")
            out = fn(ctx)
            wd.live = False
            fired = wd.disarm()
            if fired is not None:  # tripped while returning through guest code
                raise type(fired)(*fired.args)
            resp["output"] = plain(out, "run(ctx) return value")
            resp["tensors"], ctx._tensors = ctx._tensors, {}
            resp["ok"] = True
        except BaseException as e:
            wd.live = False
            fired = wd.disarm()
            err: BaseException = e
            budget_errors = (TaskTimeout, MemoryBudgetExceeded)
            # issubclass(type(e)), not isinstance(e): isinstance may read a task-defined
            # __class__ property, and no task code may run once the budget is off.
            if fired is not None and not issubclass(type(e), budget_errors):
                err = fired  # the task caught the budget error and failed some other way
            name, message = _describe(err)
            resp.update(
                error_type=name, message=message, traceback=self._format_tb(err, name, message)
            )
            if issubclass(type(err), budget_errors):
                resp["budget"] = name
            # The traceback holds the task's frames (and whatever they allocated) in a
            # cycle through this frame; break it so a failed run frees its memory now.
            del err
        finally:
            self.current_log = None
            _drop_exported(ctx._tensors)  # a failed run's (a successful one handed them on)
            peak = self.unbind_engine()
            if peak is not None:
                resp["engine_peak_bytes"] = peak
        resp["uploads"] = ctx._uploads
        resp["logs"] = ctx.log._lines + (
            [f"WARNING {ctx.log._dropped} log lines dropped"] if ctx.log._dropped else []
        )
        resp["state"] = ctx.state._delta()
        resp["guest_ms"] = (time.perf_counter() - t0) * 1000
        try:
            data = marshal.dumps(resp)
        except ValueError as e:  # pragma: no cover - plain() should make this unreachable
            _drop_exported(resp.get("tensors"))
            resp = {"ok": False, "error_type": "TypeError", "message": str(e), "traceback": ""}
            data = marshal.dumps(resp)
        if len(data) > OUTPUT_MAX_BYTES:
            _drop_exported(resp.get("tensors"))  # the run fails after all: nobody imports them
            resp = {
                "ok": False,
                "error_type": "ValueError",
                "message": f"run result is {len(data)} bytes, over {OUTPUT_MAX_BYTES}",
                "traceback": "",
                "guest_ms": resp["guest_ms"],
            }
            data = marshal.dumps(resp)
        return data

    @staticmethod
    def _buffers(req: dict[str, Any]) -> dict[str, memoryview]:
        names = req.get("buffers") or []
        if "buffer_data" in req:  # process backend: they came over the pipe
            return {n: memoryview(req["buffer_data"][n]).toreadonly() for n in names}
        main = sys.modules["__main__"]
        views = {}
        for i, name in enumerate(names):
            attr = f"_walle_buf{i}"
            views[name] = memoryview(getattr(main, attr)).toreadonly()
            delattr(main, attr)  # the run's ctx holds the only reference
        return views

    @staticmethod
    def _format_tb(err: BaseException, name: str, message: str) -> str:
        tb = BaseException.__dict__["__traceback__"].__get__(err)  # not err.__traceback__
        frames = [f for f in traceback.extract_tb(tb) if f.filename != GUEST_FILE]
        head = "Traceback (most recent call last):\n" if frames else ""
        module = _type_module(type(err))
        qual = (
            name
            if module in ("builtins", "walle") or module.startswith("walle_task.")
            else (f"{module}.{name}")
        )
        return head + "".join(traceback.format_list(frames)) + f"{qual}: {message}\n"

    def shutdown(self) -> None:
        # Drop every task object while a budget is armed: finalizers a task smuggled in
        # (a metaclass can add __del__; cycles hold generators) then run here, where the
        # watchdog can interrupt them, and not inside interpreter destruction, where a
        # loop would hang the thread destroying it.
        wd = self.watchdog
        wd.arm(SHUTDOWN_BUDGET_S, 0)
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
        wd.stop()


# The error report is built after the budget is disarmed, so it must not run task code:
# a task's exception class could define __str__, or a metaclass could make __name__ a
# property, and loop forever. Read names through type's own descriptors, and format only
# builtin exceptions with str().
_type_name = type.__dict__["__name__"].__get__
_type_module = type.__dict__["__module__"].__get__
_type_mro = type.__dict__["__mro__"].__get__
_type_dict = type.__dict__["__dict__"].__get__
_PLAIN_SCALARS = (str, int, float, bool, bytes, type(None))


def _describe(err: BaseException) -> tuple[str, str]:
    cls = type(err)
    name = _type_name(cls)
    args = BaseException.__dict__["args"].__get__(err)
    plain_args = all(type(a) in _PLAIN_SCALARS for a in args)
    module = _type_module(cls)
    if module == "builtins" and issubclass(cls, BaseExceptionGroup) and _builtin_str(cls):
        plain_args = True  # its str() is "message (n sub-exceptions)", no task code
    if plain_args and (module == "builtins" or module == "walle") and _builtin_str(cls):
        return name, str(err)[:4000]
    if plain_args:
        text = "" if not args else str(args[0]) if len(args) == 1 else repr(args)
        return name, text[:4000]
    return name, f"({len(args)} non-plain argument(s) not shown)"


def _builtin_str(cls: type) -> bool:
    """True when str() of an instance runs only C or guest code."""
    for klass in _type_mro(cls):
        if "__str__" in _type_dict(klass):
            return _type_module(klass) in ("builtins", "walle")
    return True


_GUEST: Guest | None = None


def init(in_process: bool = False) -> Guest:
    """Create the per-interpreter guest (idempotent)."""
    global _GUEST
    if _GUEST is None:
        _GUEST = Guest(in_process)
    return _GUEST


def handle(req_bytes: bytes) -> bytes:
    return init().handle(req_bytes)


def shutdown() -> None:
    global _GUEST
    if _GUEST is not None:
        _GUEST.shutdown()
        _GUEST = None
