"""`TaskVM`: load task scripts, run them in isolated interpreters (or worker processes),
keep their state, enforce budgets and disable tasks that keep failing."""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from . import guest
from .pools import InterpreterPool, Job, OnDisabled, ProcessPool
from .result import RunResult, TaskStatus
from .sandbox import SandboxViolation, compile_task

log = logging.getLogger(__name__)

# Sub-interpreters still alive when the host finalizes abort the process; close any VM the
# caller forgot before that (atexit runs before interpreter finalization).
_LIVE: weakref.WeakSet[TaskVM] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for vm in list(_LIVE):
        vm.close()


ISOLATIONS = ("interpreter", "process")
REQUIRABLE = frozenset({"numpy"})


@dataclass
class _Task:
    task_id: str
    key: str
    backend: str
    config: dict[str, Any]
    load_spec: dict[str, Any]
    timeout_s: float | None
    max_memory_mb: int | None
    max_failures: int
    state: dict[str, tuple[Any, float | None]] = field(default_factory=dict)
    enabled: bool = True
    disabled_reason: str = ""
    runs: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _number(
    config: Mapping[str, Any], name: str, default: float | None, *, integer: bool = False
) -> Any:
    value = config.get(name, default)
    if value is None:
        return None
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok or not math.isfinite(value) or value <= 0:
        kind = "a positive integer" if integer else "a positive number"
        raise ValueError(f"task config {name!r} must be {kind}, got {value!r}")
    return value


def _import_tensors(exported: dict[str, Any] | None) -> dict[str, Any]:
    """The run's returned tensors as walle_engine.np arrays: handles from an interpreter
    (the same memory), or (dtype, shape, bytes) from a worker process."""
    if not exported:
        return {}
    from walle_engine import _core
    from walle_engine import np as wnp

    out = {}
    for name, item in exported.items():
        if isinstance(item, int):
            out[name] = wnp.asarray(_core.import_tensor(item))
        else:
            dtype, shape, data = item
            flat = _core.Tensor.empty(dtype, [math.prod(shape)])
            memoryview(flat).cast("B")[:] = data
            out[name] = wnp.asarray(flat).reshape(shape)
    return out


class TaskVM:
    """Runs task scripts, each run on a worker that owns an isolated sub-interpreter.

    Typical use by the device runtime::

        vm = TaskVM()
        vm.load("ctr", source, files={"model.wle": blob}, config={"timeout_s": 2})
        result = vm.run("ctr", {"user": 7})        # or vm.submit(...) -> Future
        if not result.ok: send run_stats with result.last_error()

    Task config keys the VM itself reads (the whole dict is also `ctx.config`):
    `isolation` ("interpreter" | "process"), `requires` (e.g. ["numpy"], implies process),
    `timeout_s`, `max_memory_mb` (process growth allowed during one run), `state_max_bytes`,
    `max_failures` (consecutive failures before the task is disabled).
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        process_workers: int = 1,
        recycle_after: int = 100,
        default_timeout_s: float = 5.0,
        max_failures: int = 3,
        grace_s: float = 2.0,
        default_max_memory_mb: int | None = 1024,
        process_memory_mb: int | None = None,
        files_dir: str | Path | None = None,
        spares: int = 1,
        on_disabled: OnDisabled | None = None,
    ) -> None:
        """Start `workers` interpreter threads (default: CPU count), `spares` booted
        interpreters for recycling, and `process_workers` pre-started processes (0 turns
        the process backend off). Bundle files passed to `load()` as bytes are written
        under `files_dir` (default: a private temp dir). `on_disabled(task_id, reason)` is
        called on a VM thread when a task hits its failure limit; keep it quick."""
        self._own_files_dir = files_dir is None
        self._files_dir = Path(files_dir or tempfile.mkdtemp(prefix="walle-vm-"))
        self.default_timeout_s = default_timeout_s
        self.max_failures = max_failures
        self.default_max_memory_mb = default_max_memory_mb
        self.on_disabled = on_disabled
        self._tasks: dict[str, _Task] = {}
        self._lock = threading.Lock()
        self._interp = InterpreterPool(
            workers or os.cpu_count() or 2,
            recycle_after=recycle_after,
            grace_s=grace_s,
            spares=spares,
        )
        self._proc = (
            ProcessPool(process_workers, grace_s=grace_s, memory_mb=process_memory_mb)
            if process_workers > 0
            else None
        )
        self._closed = False
        _LIVE.add(self)

    # ---- lifecycle
    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until every worker has its interpreter (or process) up."""
        self._interp.wait_ready(timeout)
        if self._proc is not None:
            self._proc.wait_ready(timeout)

    def close(self) -> None:
        """Stop all workers; queued runs resolve with error_type 'VMClosed'."""
        if self._closed:
            return
        self._closed = True
        self._interp.close()
        if self._proc is not None:
            self._proc.close()
        if self._own_files_dir:
            shutil.rmtree(self._files_dir, ignore_errors=True)

    def __enter__(self) -> TaskVM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- tasks
    def load(
        self,
        task_id: str,
        source: str,
        files: Mapping[str, bytes] | None = None,
        config: Mapping[str, Any] | None = None,
        *,
        bundle_dir: str | Path | None = None,
    ) -> None:
        """Check, compile and register a task version, replacing any previous one (its
        state is kept; a new version starts enabled, the same version again is a no-op). `files` are the bundle's other files (models, `*.py` helpers, data);
        pass `bundle_dir` when they already sit on disk there (the device's verified
        bundle cache) so the VM does not copy them. Raises SandboxViolation or ValueError
        with a fix-it message."""
        if (
            not isinstance(task_id, str)
            or not task_id
            or len(task_id) > 200
            or not task_id.isprintable()
        ):
            raise ValueError("task_id must be a printable, non-empty str of at most 200 characters")
        if not isinstance(source, str):
            raise ValueError("task source must be a str")
        files = dict(files or {})
        config = dict(config or {})
        try:
            config = json.loads(json.dumps(config))  # plain JSON data only, and our own copy
        except (TypeError, ValueError) as e:
            raise ValueError(f"task config must be JSON data: {e}") from None
        requires = config.get("requires") or []
        if not isinstance(requires, list) or not all(isinstance(r, str) for r in requires):
            raise ValueError("task config 'requires' must be a list of module names")
        unknown = sorted(set(requires) - REQUIRABLE)
        if unknown:
            raise ValueError(
                f"task config 'requires' names {unknown}; only "
                f"{sorted(REQUIRABLE)} can be required (the rest is allowlisted)"
            )
        isolation = config.get("isolation", "process" if "numpy" in requires else "interpreter")
        if isolation not in ISOLATIONS:
            raise ValueError(f"task config 'isolation' must be one of {ISOLATIONS}")
        if "numpy" in requires and isolation != "process":
            raise ValueError(
                "numpy cannot load in an isolated interpreter; set isolation to 'process'"
            )
        if isolation == "process" and self._proc is None:
            raise ValueError("this VM has no process workers (process_workers=0)")
        timeout_s = _number(config, "timeout_s", None)
        max_memory_mb = _number(config, "max_memory_mb", self.default_max_memory_mb, integer=True)
        max_failures = _number(config, "max_failures", self.max_failures, integer=True)
        _number(config, "state_max_bytes", 256 * 1024, integer=True)
        for name, data in files.items():
            if not isinstance(name, str) or not isinstance(data, bytes | bytearray):
                raise ValueError("task files must map str names to bytes")
            parts = PurePosixPath(name).parts
            if not parts or name.startswith("/") or ".." in parts or "\\" in name:
                raise ValueError(f"bundle file name {name!r} must be a relative path without '..'")
        compiled = compile_task(task_id, source, files, frozenset(requires))
        digest = hashlib.sha256()
        digest.update(source.encode())
        for name in sorted(files):
            digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
        digest.update(json.dumps(config, sort_keys=True).encode())
        key = f"{task_id}@{digest.hexdigest()[:16]}"
        paths = self._place_files(key, files, bundle_dir)
        spec = {
            "key": key,
            "task_id": task_id,
            "config": config,
            "paths": paths,
            "codes": compiled.codes,
            "sources": compiled.sources,
        }
        with self._lock:
            old = self._tasks.get(task_id)
            if old is not None and old.key == key:
                return  # same version again (e.g. a reconnect): keep counters and a disable
            task = _Task(
                task_id, key, isolation, config, spec, timeout_s, max_memory_mb, max_failures
            )
            if old is not None:
                task.state = old.state
            self._tasks[task_id] = task

    def _place_files(
        self, key: str, files: Mapping[str, bytes], bundle_dir: str | Path | None
    ) -> dict[str, str]:
        # Models are handed to the engine by path (walle_engine.load takes a path), and a
        # path keeps multi-megabyte bundles from being copied into every interpreter.
        if bundle_dir is not None:
            root = Path(bundle_dir).resolve()
        else:
            root = self._files_dir / hashlib.sha256(key.encode()).hexdigest()[:24]
        paths: dict[str, str] = {}
        for name, data in files.items():
            path = (root / name).resolve()
            if not path.is_relative_to(root):
                raise ValueError(f"bundle file name {name!r} escapes the bundle directory")
            if bundle_dir is None and not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(path.name + ".part")
                tmp.write_bytes(data)
                tmp.replace(path)  # atomic: a concurrent reader never sees half a model
            paths[name] = str(path)
        return paths

    def unload(self, task_id: str) -> None:
        """Forget a task and its state. Workers drop its code when they recycle."""
        with self._lock:
            self._tasks.pop(task_id, None)

    def tasks(self) -> list[str]:
        with self._lock:
            return sorted(self._tasks)

    def status(self, task_id: str) -> TaskStatus:
        t = self._task(task_id)
        with t.lock:
            return TaskStatus(
                task_id,
                t.enabled,
                t.backend,
                t.runs,
                t.failures,
                t.consecutive_failures,
                t.disabled_reason,
            )

    def enable(self, task_id: str) -> None:
        """Re-enable a disabled task (e.g. after a new version is loaded)."""
        t = self._task(task_id)
        with t.lock:
            t.enabled, t.disabled_reason, t.consecutive_failures = True, "", 0

    def state(self, task_id: str) -> dict[str, Any]:
        """A copy of the task's live (unexpired) state values."""
        t = self._task(task_id)
        now = time.time()
        with t.lock:
            return {k: v for k, (v, exp) in t.state.items() if exp is None or exp > now}

    def export_state(self, task_id: str) -> dict[str, tuple[Any, float | None]]:
        """The task's state as `{key: (value, expires_at_unix_or_None)}`, for persisting."""
        t = self._task(task_id)
        now = time.time()
        with t.lock:
            return {k: v for k, v in t.state.items() if v[1] is None or v[1] > now}

    def import_state(self, task_id: str, snapshot: Mapping[str, tuple[Any, float | None]]) -> None:
        """Replace the task's state with an `export_state()` snapshot (e.g. after a restart)."""
        t = self._task(task_id)
        state = {}
        for key, (value, expires) in snapshot.items():
            if not isinstance(key, str) or not (
                expires is None or isinstance(expires, int | float)
            ):
                raise ValueError("state snapshot must map str keys to (value, expires_at|None)")
            state[key] = (guest.plain(value, f"state[{key!r}]"), expires)
        with t.lock:
            t.state = state

    def _task(self, task_id: str) -> _Task:
        with self._lock:
            t = self._tasks.get(task_id)
        if t is None:
            raise KeyError(f"task {task_id!r} is not loaded; call vm.load() first")
        return t

    # ---- runs
    def run(
        self,
        task_id: str,
        inputs: Mapping[str, Any] | None = None,
        *,
        window: list[Mapping[str, Any]] | None = None,
        buffers: Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
        device: Mapping[str, Any] | None = None,
    ) -> RunResult:
        """Run the task once and wait for the result. Never raises for task failures."""
        return self.submit(
            task_id, inputs, window=window, buffers=buffers, timeout_s=timeout_s, device=device
        ).result()

    def submit(
        self,
        task_id: str,
        inputs: Mapping[str, Any] | None = None,
        *,
        window: list[Mapping[str, Any]] | None = None,
        buffers: Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
        device: Mapping[str, Any] | None = None,
    ) -> Future[RunResult]:
        """Queue one run; the future resolves with its RunResult (even on timeout).

        `buffers` maps names to objects with the buffer protocol (numpy arrays, bytes,
        engine tensors): the task sees them as read-only `ctx.buffers[name]` memoryviews of
        the host's memory, shared without a copy (copied once for the process backend)."""
        t = self._task(task_id)
        out: Future[RunResult] = Future()
        if not t.enabled:
            out.set_result(
                RunResult(
                    task_id,
                    False,
                    error_type="TaskDisabled",
                    message=f"task is disabled: {t.disabled_reason}",
                    backend=t.backend,
                )
            )
            return out
        if timeout_s is not None and not (isinstance(timeout_s, int | float) and timeout_s > 0):
            raise ValueError("timeout_s must be a positive number of seconds")
        budget = timeout_s or t.timeout_s or self.default_timeout_s
        now = time.time()
        with t.lock:
            state = {k: v for k, v in t.state.items() if v[1] is None or v[1] > now}
        body = {
            "inputs": guest.plain(dict(inputs or {}), "inputs"),
            "window": None if window is None else guest.plain([dict(e) for e in window], "window"),
            # The device's own attributes (model, OS, app version…): read-only facts for the task.
            "device": guest.plain(dict(device or {}), "device"),
            "state": state,
            "timeout_s": float(budget),
            "max_memory_mb": t.max_memory_mb,
        }
        views = {}
        for name, obj in (buffers or {}).items():
            if not isinstance(name, str):
                raise TypeError("buffer names must be str")
            views[name] = memoryview(obj).toreadonly()  # TypeError if not a buffer
        job = Job(t.key, t.load_spec, body, float(budget), views)

        # The job keeps this callback after it ran; the callback must not keep the caller's
        # result alive (it may hold the task's tensors), so it hands `out` over once.
        pending = [out]

        def done(f: Future[dict[str, Any]]) -> None:
            target = pending.pop()
            try:
                target.set_result(self._finish(t, f.result()))
            except BaseException as e:  # never leave the caller waiting
                target.set_exception(e)

        job.future.add_done_callback(done)
        (self._proc if t.backend == "process" else self._interp).submit(job)  # type: ignore[union-attr]
        return out

    def _finish(self, t: _Task, resp: dict[str, Any]) -> RunResult:
        ok = bool(resp.get("ok"))
        disabled_now = False
        with t.lock:
            t.runs += 1
            if ok:
                t.consecutive_failures = 0
                delta = resp.get("state") or {}
                for k in delta.get("del", ()):
                    t.state.pop(k, None)
                t.state.update(delta.get("set", {}))
            else:
                t.failures += 1
                t.consecutive_failures += 1
                if t.enabled and t.consecutive_failures >= t.max_failures:
                    t.enabled = False
                    disabled_now = True
                    t.disabled_reason = (
                        f"{t.consecutive_failures} failed runs in a row, last: "
                        f"{resp.get('error_type')}: {resp.get('message', '')}"[:500]
                    )
        result = RunResult(
            t.task_id,
            ok,
            output=resp.get("output") if ok else None,
            error_type=None if ok else resp.get("error_type", "Error"),
            message="" if ok else resp.get("message", ""),
            traceback="" if ok else resp.get("traceback", ""),
            duration_ms=float(resp.get("duration_ms", 0.0)),
            queue_ms=float(resp.get("queue_ms", 0.0)),
            uploads=list(resp.get("uploads") or []) if ok else [],
            logs=list(resp.get("logs") or []),
            backend=t.backend,
            timed_out=resp.get("budget") == "TaskTimeout",
            disabled=disabled_now,
            engine_peak_bytes=resp.get("engine_peak_bytes"),
            tensors=_import_tensors(resp.get("tensors")),
        )
        if disabled_now:
            log.warning("task %s disabled: %s", t.task_id, t.disabled_reason)
            if self.on_disabled is not None:
                try:
                    self.on_disabled(t.task_id, t.disabled_reason)
                except Exception:
                    log.exception("on_disabled callback failed")
        return result

    def stats(self) -> dict[str, Any]:
        """Pool health numbers for the device's own telemetry."""
        pool = self._interp
        return {
            "interpreter_workers": len(pool.workers),
            "abandoned_workers": pool.abandoned,
            "interpreter_create_ms": list(pool.create_ms),
            "process_workers": self._proc.size if self._proc else 0,
            "process_restarts": self._proc.restarts if self._proc else 0,
        }


__all__ = ["RunResult", "SandboxViolation", "TaskStatus", "TaskVM"]
