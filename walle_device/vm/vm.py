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
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from . import boundary, crash, guest, oswall, policy
from .pools import InterpreterPool, Job, OnDisabled, ProcessPool, runtime_dirs
from .result import RunResult, TaskStatus
from .sandbox import SandboxViolation, compile_task

log = logging.getLogger(__name__)

# Sub-interpreters still alive when the host finalizes abort the process; close any VM the
# caller forgot before that (atexit runs before interpreter finalization).
_LIVE: weakref.WeakSet[TaskVM] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    stuck = [vm for vm in list(_LIVE) if not vm.close()]
    if stuck:
        # A task stuck in C holds its interpreter's GIL: interpreter finalization would
        # wait for it forever (it destroys every sub-interpreter). Leave without it.
        log.error("walle VM: a task is stuck in native code; exiting without finalization")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_STUCK)


ISOLATIONS = ("interpreter", "process")
REQUIRABLE = policy.REQUIRABLE
EXIT_STUCK = 75  # EX_TEMPFAIL: the process ended early because a task would not stop


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
    state_sizes: dict[str, int] = field(default_factory=dict)
    state_max_bytes: int = 256 * 1024
    quarantined: str = ""  # the crash ledger's reason, for this version
    # config os_wall: this version's own walled worker process, which reads its bundle only
    pool: ProcessPool | None = None
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


# The same measure as ctx.state's cap in the guest: key bytes + expanded value size.
_state_size = guest.State._size


def _apply_state(t: _Task, delta: dict[str, Any]) -> str:
    """Apply a run's state changes unless they take the task over its cap (checked here,
    on the host, whatever the guest said); the reason when refused. Caller holds t.lock."""
    sizes = dict(t.state_sizes)
    for k in delta.get("del", ()):
        sizes.pop(k, None)
    sets = delta.get("set", {})
    for k, (value, _) in sets.items():
        sizes[k] = _state_size(k, value)
    used = sum(sizes.values())
    if used > t.state_max_bytes:
        return (
            f"ctx.state would hold {used} bytes, over the task's cap of {t.state_max_bytes} "
            "(config state_max_bytes); the run's changes were not kept"
        )
    for k in delta.get("del", ()):
        t.state.pop(k, None)
    t.state.update(sets)
    t.state_sizes = sizes
    return ""


def _close_later(pool: ProcessPool) -> None:
    """Stop a task's own worker process without making the caller wait for it."""
    threading.Thread(target=pool.close, name="walle-vm-close", daemon=True).start()


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
        os_wall: bool = True,
        bundle_roots: tuple[str | Path, ...] = (),
        crash_dir: str | Path | None = None,
        quarantine_after: int = 2,
    ) -> None:
        """Start `workers` interpreter threads (default: CPU count), `spares` booted
        interpreters for recycling, and `process_workers` pre-started processes (0 turns
        the process backend off). Bundle files passed to `load()` as bytes are written
        under `files_dir` (default: a private temp dir). `on_disabled(task_id, reason)` is
        called on a VM thread when a task hits its failure limit; keep it quick.

        `os_wall` walls in the worker processes (seccomp, Landlock, rlimits; see
        oswall.py) with read access to the Python runtime, `files_dir` and
        `bundle_roots` (directories later passed to `load(bundle_dir=...)`).

        `crash_dir` turns on crash containment (crash.py): the VM records which task
        version each worker runs in a black box there, and refuses runs of versions the
        crash ledger quarantined (after `quarantine_after` crashes of the device runtime
        or of a worker process) with error_type 'TaskQuarantined'."""
        self._own_files_dir = files_dir is None
        self._files_dir = Path(files_dir or tempfile.mkdtemp(prefix="walle-vm-"))
        self.default_timeout_s = default_timeout_s
        self.max_failures = max_failures
        self.default_max_memory_mb = default_max_memory_mb
        self.on_disabled = on_disabled
        self._grace_s = grace_s
        self._process_memory_mb = process_memory_mb
        self._tasks: dict[str, _Task] = {}
        self._lock = threading.Lock()
        self._blackbox: crash.BlackBox | None = None
        self._ledger: crash.CrashLedger | None = None
        if crash_dir is not None:
            # The supervisor charged any previous crash before starting this process.
            self._blackbox = crash.BlackBox(Path(crash_dir) / crash.BLACKBOX_NAME)
            self._blackbox.clear()
            self._ledger = crash.CrashLedger(Path(crash_dir) / crash.LEDGER_NAME, quarantine_after)
        self._interp = InterpreterPool(
            workers or os.cpu_count() or 2,
            recycle_after=recycle_after,
            grace_s=grace_s,
            spares=spares,
            blackbox=self._blackbox,
        )
        self._roots = tuple(
            os.path.join(str(Path(r).resolve()), "") for r in (self._files_dir, *bundle_roots)
        )
        self.os_wall = bool(os_wall and sys.platform.startswith("linux"))
        self._proc = (
            ProcessPool(
                process_workers,
                grace_s=grace_s,
                memory_mb=process_memory_mb,
                wall_dirs=runtime_dirs() + self._roots if self.os_wall else None,
            )
            if process_workers > 0
            else None
        )
        self._closed = False
        self._clean = True
        _LIVE.add(self)

    # ---- lifecycle
    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until every worker has its interpreter (or process) up."""
        self._interp.wait_ready(timeout)
        if self._proc is not None:
            self._proc.wait_ready(timeout)

    def close(self, timeout: float = 10.0) -> bool:
        """Stop all workers within about `timeout` seconds; queued runs resolve with
        error_type 'VMClosed'. False when a worker is stuck in native code: its
        interpreter cannot be destroyed, and the process must then leave with os._exit
        (the VM's atexit hook does that), because interpreter finalization would wait for
        it forever."""
        if self._closed:
            return self._clean
        self._closed = True
        self._clean = self._interp.close(timeout)
        if self._proc is not None:
            self._proc.close(timeout)
        with self._lock:
            walled = [t.pool for t in self._tasks.values() if t.pool is not None]
        for pool in walled:
            pool.close(timeout)
        if self._own_files_dir:
            shutil.rmtree(self._files_dir, ignore_errors=True)
        if self._blackbox is not None:
            self._blackbox.close()  # nothing is running: no crash to charge to anyone
        return self._clean

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
        os_wall = config.get("os_wall", False)
        if not isinstance(os_wall, bool):
            raise ValueError("task config 'os_wall' must be true or false")
        isolation = config.get(
            "isolation", "process" if "numpy" in requires or os_wall else "interpreter"
        )
        if isolation not in ISOLATIONS:
            raise ValueError(f"task config 'isolation' must be one of {ISOLATIONS}")
        if "numpy" in requires and isolation != "process":
            raise ValueError(
                "numpy cannot load in an isolated interpreter; set isolation to 'process'"
            )
        if isolation == "process" and self._proc is None and not os_wall:
            raise ValueError("this VM has no process workers (process_workers=0)")
        if os_wall:
            if isolation != "process":
                raise ValueError("config 'os_wall' needs isolation 'process'")
            if not (self.os_wall and oswall.seccomp_available()):
                raise ValueError(
                    "config 'os_wall' asks for the OS wall, which this VM cannot give "
                    "(TaskVM(os_wall=False), not Linux, or the seccomp binding is missing: "
                    "pip install mephi42-seccomp)"
                )
        if (
            isolation == "process"
            and self.os_wall
            and not os_wall
            and bundle_dir is not None
            and not os.path.join(str(Path(bundle_dir).resolve()), "").startswith(self._roots)
        ):
            raise ValueError(
                f"bundle_dir {bundle_dir} is outside the VM's bundle roots, which walled "
                "worker processes cannot read: pass it in TaskVM(bundle_roots=...)"
            )
        timeout_s = _number(config, "timeout_s", None)
        max_memory_mb = _number(config, "max_memory_mb", self.default_max_memory_mb, integer=True)
        max_failures = _number(config, "max_failures", self.max_failures, integer=True)
        state_max_bytes = _number(config, "state_max_bytes", 256 * 1024, integer=True)
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
        with self._lock:
            old = self._tasks.get(task_id)
            if old is not None and old.key == key:
                return  # same version again (e.g. a reconnect): keep counters and a disable
        root, paths = self._place_files(key, files, bundle_dir)
        spec = {
            "key": key,
            "task_id": task_id,
            "requires": list(requires),
            "paths": paths,
            "codes": compiled.codes,
            "sources": compiled.sources,
        }
        pool = None
        if os_wall:
            # Its own worker process, whose Landlock view is this version's bundle only
            # (plus the Python runtime): other tasks' bundles are out of its reach even if
            # both sandbox layers inside the process failed.
            pool = ProcessPool(
                1,
                grace_s=self._grace_s,
                memory_mb=self._process_memory_mb,
                wall_dirs=(*runtime_dirs(), os.path.join(str(root), "")),
            )
        with self._lock:
            old = self._tasks.get(task_id)
            if old is not None and old.key == key:
                if pool is not None:
                    _close_later(pool)
                return  # loaded concurrently by another caller
            task = _Task(
                task_id, key, isolation, config, spec, timeout_s, max_memory_mb, max_failures
            )
            task.state_max_bytes = state_max_bytes
            task.quarantined = self._ledger.quarantined(key) if self._ledger else ""
            task.pool = pool
            if old is not None:
                task.state, task.state_sizes = old.state, old.state_sizes
            self._tasks[task_id] = task
        if old is not None and old.pool is not None:
            _close_later(old.pool)

    def _place_files(
        self, key: str, files: Mapping[str, bytes], bundle_dir: str | Path | None
    ) -> tuple[Path, dict[str, str]]:
        # Models are handed to the engine by path (walle_engine.load takes a path), and a
        # path keeps multi-megabyte bundles from being copied into every interpreter.
        if bundle_dir is not None:
            root = Path(bundle_dir).resolve()
        else:
            root = self._files_dir / hashlib.sha256(key.encode()).hexdigest()[:24]
            root.mkdir(parents=True, exist_ok=True)
            root = root.resolve()
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
        return root, paths

    def unload(self, task_id: str) -> None:
        """Forget a task and its state. Workers drop its code when they recycle."""
        with self._lock:
            t = self._tasks.pop(task_id, None)
        if t is not None and t.pool is not None:
            _close_later(t.pool)

    def tasks(self) -> list[str]:
        with self._lock:
            return sorted(self._tasks)

    def status(self, task_id: str) -> TaskStatus:
        t = self._task(task_id)
        with t.lock:
            return TaskStatus(
                task_id,
                t.enabled and not t.quarantined,
                t.backend,
                t.runs,
                t.failures,
                t.consecutive_failures,
                t.quarantined or t.disabled_reason,
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
            t.state_sizes = {k: _state_size(k, v) for k, (v, _) in state.items()}

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
        if t.quarantined:
            out.set_result(
                RunResult(
                    task_id,
                    False,
                    error_type="TaskQuarantined",
                    message=t.quarantined,
                    backend=t.backend,
                )
            )
            return out
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
            "state_max_bytes": t.state_max_bytes,
            # Sent with every run, never cached in the interpreter: another task sharing
            # it never finds this task's config in memory.
            "config": t.config,
        }
        views = {}
        for name, obj in (buffers or {}).items():
            if not isinstance(name, str):
                raise TypeError("buffer names must be str")
            views[name] = memoryview(obj).toreadonly()  # TypeError if not a buffer
        tensor_cap = (t.max_memory_mb << 20) if t.max_memory_mb else guest.TENSOR_BYTES_DEFAULT_CAP
        limits = boundary.Limits(state_bytes=t.state_max_bytes, tensor_bytes=tensor_cap)
        job = Job(t.key, t.load_spec, body, float(budget), views, limits)

        # The job keeps this callback after it ran; the callback must not keep the caller's
        # result alive (it may hold the task's tensors), so it hands `out` over once.
        pending = [out]

        def done(f: Future[dict[str, Any]]) -> None:
            target = pending.pop()
            try:
                result = self._finish(t, f.result(), job.run_token, limits)
            except BaseException as e:  # a bug here must not reach the caller as a raise
                log.exception("walle VM could not finish a run of %s", t.task_id)
                result = RunResult(
                    t.task_id, False, error_type="VMError", message=repr(e), backend=t.backend
                )
            target.set_result(result)

        job.future.add_done_callback(done)
        backend = t.pool or (self._proc if t.backend == "process" else self._interp)
        backend.submit(job)  # type: ignore[union-attr]
        return out

    def _finish(
        self, t: _Task, resp: dict[str, Any], owner: int, limits: boundary.Limits
    ) -> RunResult:
        # `resp` passed boundary.accept: plain data of the right types within the caps.
        # What is left to check here needs the host's own records: tensor handles (owned by
        # this run only) and the task's whole state against its cap.
        tensors: dict[str, Any] = {}
        if resp.get("ok"):
            try:
                tensors = boundary.import_tensors(resp.get("tensors"), owner, limits.tensor_bytes)
            except boundary.InvalidResult as e:
                resp = boundary.failure("InvalidResult", f"the run's returned tensors: {e}")
        else:
            boundary.drop_tensors(resp.get("tensors"), owner)
        if resp.get("crash") and self._ledger is not None:
            # A worker process died from a signal during this run: count it like a crash
            # of the device runtime, so a version that keeps crashing is quarantined.
            entry = self._ledger.record(t.key, str(resp.get("message", "")))
            t.quarantined = str(entry.get("quarantined", ""))
        disabled_now = False
        with t.lock:
            ok = resp.get("ok") is True
            if ok:
                over = _apply_state(t, resp.get("state") or {})
                if over:
                    ok, tensors = False, {}
                    resp = boundary.failure("StateFull", over, recycle=False)
            t.runs += 1
            if ok:
                t.consecutive_failures = 0
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
            tensors=tensors,
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
            # What the OS wall of the last worker process started could apply.
            "process_wall": self._proc.wall_report if self._proc else None,
            "walled_task_workers": sum(1 for t in self._tasks.values() if t.pool is not None),
        }


__all__ = ["RunResult", "SandboxViolation", "TaskStatus", "TaskVM"]
