"""The two execution backends behind `TaskVM`: a pool of worker threads that each own an
isolated sub-interpreter, and a pool of pre-started worker processes.

Both speak the same protocol with the guest (`guest.handle`): one marshal'ed request in,
one marshal'ed response out, plain data only.
"""

from __future__ import annotations

import _interpqueues
import _interpreters
import functools
import itertools
import logging
import marshal
import multiprocessing
import os
import queue
import random
import secrets
import signal
import site
import struct
import sys
import sysconfig
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from . import boundary, guest, oswall, policy

log = logging.getLogger(__name__)

# Compiled once per host process; each new interpreter just unmarshals it. The filename is
# the real path so the guest's "is this my own code" test matches in both backends.
_GUEST_PATH = str(Path(guest.__file__).resolve())
GUEST_CODE = marshal.dumps(compile(Path(_GUEST_PATH).read_text(), guest.GUEST_FILE, "exec"))
POLICY_DATA = marshal.dumps(policy.as_data())


@functools.cache
def runtime_dirs() -> tuple[str, ...]:
    """The Python runtime's own library directories (stdlib, site-packages), as the guest's
    audit hook and the OS wall let a run read them: lazy imports of allowed modules."""
    paths = sysconfig.get_paths()
    found = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    found |= set(site.getsitepackages())
    try:  # the engine's tuning cache: read by walle_engine.load inside a run
        from walle_engine._model import tuning_cache_path

        found.add(str(tuning_cache_path().parent))
    except ImportError:
        pass
    out = set()
    for d in found:
        if os.path.isdir(d):
            out.add(os.path.join(os.path.normpath(d), ""))
            out.add(os.path.join(os.path.realpath(d), ""))
    return tuple(sorted(out))


_BOOT = """\
import sys, marshal, types
sys.path[:] = list(_walle_path)
_walle_guest = types.ModuleType("walle_guest")
_walle_guest.__file__ = _walle_file
sys.modules["walle_guest"] = _walle_guest
exec(marshal.loads(_walle_code), _walle_guest.__dict__)
del _walle_code
_walle_guest.init(policy=marshal.loads(_walle_policy), runtime_dirs=_walle_dirs)
del _walle_policy
import _interpqueues
import _interpreters  # registers the buffer type so host buffers can be shared zero-copy
"""
_RUN = "_interpqueues.put(_walle_qid, _walle_guest.handle(_walle_req), 0, 1)"
_SHUTDOWN = "_walle_guest.shutdown()"


class Job:
    """One run waiting for, or running on, a worker. `finish` is first-writer-wins so a
    supervisor can resolve a stuck run while its worker is still busy."""

    def __init__(
        self,
        key: str,
        load_spec: dict[str, Any],
        body: dict[str, Any],
        timeout_s: float,
        buffers: dict[str, memoryview] | None = None,
        limits: boundary.Limits | None = None,
    ) -> None:
        self.key = key
        # The owner token of this run's returned tensors: the host imports a handle only
        # under it, so a handle the guest forged or guessed never reaches another run's.
        self.run_token = secrets.randbits(63)
        self.limits = limits or boundary.Limits(256 << 10, guest.TENSOR_BYTES_DEFAULT_CAP)
        self.buffers = buffers or {}
        self.load_spec = load_spec
        self.body = body
        self.timeout_s = timeout_s
        self.future: Future[dict[str, Any]] = Future()
        self.submitted = time.monotonic()
        self.started: float | None = None
        self._lock = threading.Lock()

    def encode(self, loaded: set[str], copy_buffers: bool = False) -> bytes:
        req = dict(self.body, key=self.key, buffers=list(self.buffers), run_token=self.run_token)
        if copy_buffers:  # another process cannot see our memory
            req["buffer_data"] = {n: v.tobytes() for n, v in self.buffers.items()}
        if self.key not in loaded:
            req["load"] = self.load_spec
        return marshal.dumps(req)

    def start(self) -> bool:
        """Mark the job running; False if it was already resolved (e.g. the VM closed)."""
        with self._lock:
            if self.future.done():
                return False
            self.started = time.monotonic()
            return True

    def finish(self, resp: dict[str, Any]) -> bool:
        with self._lock:
            if self.future.done():
                return False
            now = time.monotonic()
            started = self.started if self.started is not None else now
            resp.setdefault("queue_ms", (started - self.submitted) * 1000)
            resp.setdefault("duration_ms", (now - started) * 1000)
            self.future.set_result(resp)
            return True


def _stuck_response(job: Job, grace_s: float, hard_killed: bool) -> dict[str, Any]:
    how = (
        "its worker process was killed"
        if hard_killed
        else (
            "its worker thread was abandoned and replaced (code stuck outside Python bytecode "
            "cannot be interrupted in-process; use isolation='process' for a hard kill)"
        )
    )
    return {
        "ok": False,
        "error_type": "TaskTimeout",
        "budget": "TaskTimeout",
        "message": f"run did not stop within {job.timeout_s:g} s + {grace_s:g} s grace; {how}",
        "traceback": "",
    }


def boot_interpreter(pool: InterpreterPool) -> int:
    """Create an isolated interpreter and start the guest in it; return its id."""
    t0 = time.perf_counter()
    iid = _interpreters.create("isolated")  # own GIL, own obmalloc
    _interpreters.set___main___attrs(
        iid,
        {
            "_walle_code": GUEST_CODE,
            "_walle_policy": POLICY_DATA,
            "_walle_dirs": runtime_dirs(),
            "_walle_file": _GUEST_PATH,
            "_walle_path": tuple(p for p in sys.path if isinstance(p, str)),
        },
    )
    exc = _interpreters.exec(iid, _BOOT)
    if exc is not None:
        _interpreters.destroy(iid)
        raise RuntimeError(f"task interpreter failed to start: {exc.formatted}")
    pool._note_create((time.perf_counter() - t0) * 1000)
    return iid


def destroy_interpreter(iid: int) -> None:
    try:
        exc = _interpreters.exec(iid, _SHUTDOWN)
        if exc is not None:
            # Destroying an interpreter whose watchdog thread is still alive aborts the
            # whole process (Py_EndInterpreter: not the last thread); leak it instead.
            log.error(
                "task interpreter %s did not shut down, leaking it: %s",
                iid,
                getattr(exc, "formatted", exc),
            )
            return
        _interpreters.destroy(iid)
    except Exception:  # a broken interpreter must not take a worker thread down
        log.exception("destroying task interpreter %s failed", iid)


class _InterpWorker:
    """A thread that owns one isolated sub-interpreter and runs jobs in it one at a time."""

    _ids = itertools.count()

    def __init__(self, pool: InterpreterPool) -> None:
        self.pool = pool
        self.index = next(self._ids)
        self.iid: int | None = None
        self.qid = _interpqueues.create(0, 0, 1)
        self.loaded: set[str] = set()
        self.runs = 0
        # Stagger recycling so the whole pool does not pause at once.
        self.recycle_at = pool.recycle_after + random.randint(0, max(1, pool.recycle_after // 4))
        self.job: Job | None = None
        self.abandoned = False
        # This worker's slot in the crash black box (which task it is running).
        self.slot = pool.blackbox.take_slot() if pool.blackbox is not None else None
        self.ready = threading.Event()
        self.thread = threading.Thread(
            target=self._main, name=f"walle-vm-{self.index}", daemon=True
        )

    # ---- interpreter lifecycle
    def _create(self) -> None:
        # A spare booted in the background makes a recycle a pointer swap; without one
        # (first start, or spares used up) boot inline.
        iid = self.pool._take_spare()
        if iid is None:
            iid = boot_interpreter(self.pool)
        self.iid = iid
        self.loaded = set()
        self.runs = 0

    def _destroy(self) -> None:
        if self.iid is not None:
            iid, self.iid = self.iid, None
            self.pool._retire(iid)

    def _main(self) -> None:
        # Never leave the shared queue without a consumer: if an interpreter cannot be
        # created, answer runs with a VMError and retry on the next run, so callers get an
        # error instead of waiting forever.
        self._try_create()
        self.ready.set()
        try:
            while not self.abandoned:
                job = self.pool.jobs.get()
                if job is None:
                    break
                if self.abandoned:  # raced with the supervisor: let the replacement run it
                    self.pool.jobs.put(job)
                    break
                if not job.start():
                    continue
                if self.iid is None and not self._try_create():
                    job.finish(_vm_error("could not start a task interpreter (see the log)"))
                    continue
                self.job = job
                resp = self._run(job)
                self.job = None
                if self.abandoned:
                    break  # the supervisor already answered and replaced this worker
                job.finish(resp)
                if self.runs >= self.recycle_at or resp.get("budget") or resp.get("recycle"):
                    # After K runs (create/destroy leaks upstream, but so does a long-lived
                    # interpreter's heap) or after a budget trip that may have interrupted
                    # library code mid-update, start from a clean interpreter.
                    self._destroy()
                    self._try_create()
                # Let go of the run while waiting for the next: through its future the job
                # reaches the caller's result (tensors the task handed over) and buffers.
                job = resp = None
        finally:
            self._destroy()
            _interpqueues.destroy(self.qid)
            if self.pool.blackbox is not None:
                self.pool.blackbox.give_slot(self.slot)
            self.pool._worker_exit(self)

    def _try_create(self) -> bool:
        try:
            self._create()
            return True
        except Exception:
            log.exception("walle VM worker could not create its interpreter")
            return False

    def _run(self, job: Job) -> dict[str, Any]:
        assert self.iid is not None
        self.runs += 1
        try:
            _interpreters.set___main___attrs(
                self.iid,
                {
                    "_walle_req": job.encode(self.loaded),
                    "_walle_qid": self.qid,
                    # Buffers are shared, not copied: the task reads the host's memory.
                    **{f"_walle_buf{i}": view for i, view in enumerate(job.buffers.values())},
                },
            )
            box = self.pool.blackbox
            if box is not None:
                box.enter(self.slot, job.key)  # a native crash in this run names the task
            try:
                exc = _interpreters.exec(self.iid, _RUN)
            finally:
                if box is not None:
                    box.leave(self.slot)
            if exc is not None:
                return {
                    "ok": False,
                    "error_type": "VMError",
                    "message": getattr(exc, "formatted", str(exc)),
                    "traceback": getattr(exc, "errdisplay", ""),
                    "recycle": True,
                }
            data, *_ = _interpqueues.get(self.qid)
            resp = boundary.accept(data, job.limits)
        except Exception as e:  # the worker must survive whatever happened in there
            log.exception("walle VM run failed in the host")
            return _vm_error(f"{type(e).__name__}: {e}")
        if resp.get("error_type") != "NotLoaded":
            self.loaded.add(job.key)
        return resp


def _vm_error(message: str) -> dict[str, Any]:
    return {
        "ok": False,
        "error_type": "VMError",
        "message": message,
        "traceback": "",
        "recycle": True,
    }


class InterpreterPool:
    """N worker threads, each with a pre-created isolated interpreter, sharing one queue."""

    def __init__(
        self,
        size: int,
        *,
        recycle_after: int = 100,
        grace_s: float = 2.0,
        spares: int = 1,
        blackbox: Any = None,
    ) -> None:
        self.size = size
        self.blackbox = blackbox
        self.spare_target = spares
        self._spares: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._spare_count = 0
        self._retired: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._maker_wake = threading.Event()
        self.recycle_after = recycle_after
        self.grace_s = grace_s
        self.jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self.workers: set[_InterpWorker] = set()
        self.create_ms: list[float] = []
        self.abandoned = 0
        self._abandoned: list[_InterpWorker] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        for _ in range(size):
            self._spawn()
        self._supervisor = threading.Thread(
            target=self._supervise, name="walle-vm-supervisor", daemon=True
        )
        self._supervisor.start()
        self._maker = threading.Thread(
            target=self._make_spares, name="walle-vm-spares", daemon=True
        )
        self._maker.start()

    # ---- spare interpreters: boot replacements and destroy retired ones off the hot path
    def _take_spare(self) -> int | None:
        try:
            iid = self._spares.get_nowait()
        except queue.Empty:
            return None
        with self._lock:
            self._spare_count -= 1
        self._maker_wake.set()
        return iid

    def _retire(self, iid: int) -> None:
        if self._closed.is_set():
            destroy_interpreter(iid)
        else:
            self._retired.put(iid)
            self._maker_wake.set()

    def _make_spares(self) -> None:
        while not self._closed.is_set():
            self._maker_wake.clear()
            while True:
                try:
                    destroy_interpreter(self._retired.get_nowait())
                except queue.Empty:
                    break
            with self._lock:
                need = self._spare_count < self.spare_target
            if need and not self._closed.is_set():
                try:
                    iid = boot_interpreter(self)
                except Exception:
                    log.exception("booting a spare task interpreter failed")
                    self._closed.wait(1.0)
                    continue
                with self._lock:
                    self._spare_count += 1
                self._spares.put(iid)
                continue
            self._maker_wake.wait(1.0)

    def _spawn(self) -> _InterpWorker | None:
        # Under the lock, and only while open: close() snapshots `workers` under the same
        # lock, so it never sees (and joins) a replacement whose thread has not started.
        with self._lock:
            if self._closed.is_set():
                return None
            w = _InterpWorker(self)
            w.thread.start()
            self.workers.add(w)
        return w

    def _note_create(self, ms: float) -> None:
        with self._lock:
            self.create_ms.append(ms)
            del self.create_ms[:-100]

    def _worker_exit(self, w: _InterpWorker) -> None:
        with self._lock:
            self.workers.discard(w)

    def wait_ready(self, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        for w in list(self.workers):
            w.ready.wait(max(0.0, end - time.monotonic()))

    def submit(self, job: Job) -> None:
        if self._closed.is_set():
            raise RuntimeError("the VM is closed")
        self.jobs.put(job)

    def _supervise(self) -> None:
        # The guest's watchdog stops Python-level overruns itself; this catches a worker
        # stuck in C code (a huge regex, a giant int power) so callers still get an answer
        # and the pool keeps its capacity.
        while not self._closed.wait(0.05):
            now = time.monotonic()
            with self._lock:
                busy = [(w, w.job) for w in self.workers if w.job is not None and not w.abandoned]
            for w, job in busy:
                if job is None or job.started is None:
                    continue
                if now > job.started + job.timeout_s + self.grace_s:
                    w.abandoned = True
                    with self._lock:
                        self.workers.discard(w)
                        self.abandoned += 1
                        self._abandoned.append(w)
                    job.finish(_stuck_response(job, self.grace_s, hard_killed=False))
                    log.warning("walle VM worker %s abandoned (stuck run)", w.index)
                    self._spawn()

    def close(self, timeout: float = 10.0) -> bool:
        """Stop the workers within `timeout` seconds; False if some are still stuck in C
        (their interpreters cannot be destroyed, see TaskVM.close)."""
        with self._lock:
            self._closed.set()
            workers = list(self.workers)
            stuck = list(self._abandoned)
        self._supervisor.join(timeout)
        with self._lock:  # a replacement the supervisor spawned just before it saw closed
            workers = list(self.workers | set(workers))
        for _ in workers + stuck:  # a stuck worker that recovers must find a sentinel too
            self.jobs.put(None)
        end = time.monotonic() + timeout
        for w in workers + stuck:
            # Stuck workers get the same deadline: an interpreter still running when the
            # host finalizes would abort the process, so give them the chance to finish.
            w.thread.join(max(0.0, end - time.monotonic()))
        self._maker_wake.set()
        self._maker.join(max(0.0, end - time.monotonic()))
        for q in (self._spares, self._retired):
            while True:
                try:
                    destroy_interpreter(q.get_nowait())
                except queue.Empty:
                    break
        # Anything still queued will never run.
        while True:
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.finish(
                    {
                        "ok": False,
                        "error_type": "VMClosed",
                        "message": "the VM was closed",
                        "traceback": "",
                    }
                )
        return not any(w.thread.is_alive() for w in workers + stuck)


# --------------------------------------------------------------------------- processes
_HEADER = struct.Struct("<d")  # the run's CPU allowance in seconds, ahead of each request


def _child_main(
    conn: Any, memory_mb: int | None, wall: tuple[str, ...] | None, dirs: tuple[str, ...]
) -> None:
    """Entry point of a worker process: the OS wall (if asked), then the same guest as in
    the interpreter backend, in the child's main interpreter."""
    sys.dont_write_bytecode = True  # nothing to write, and the wall refuses writes anyway
    report: dict[str, Any] = {}
    if wall is not None:
        report = oswall.apply(wall, memory_mb)
    elif memory_mb:
        import resource

        limit = memory_mb << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    conn.send_bytes(marshal.dumps(report))  # ready: what the wall could apply, if any
    guest.init(in_process=True, policy=marshal.loads(POLICY_DATA), runtime_dirs=dirs)
    while True:
        try:
            msg = conn.recv_bytes()
        except (EOFError, OSError):
            break
        if not msg:
            break
        (cpu_s,) = _HEADER.unpack_from(msg)
        if wall is not None:
            oswall.arm_cpu(cpu_s)
        conn.send_bytes(guest.handle(memoryview(msg)[_HEADER.size :]))
    guest.shutdown()


class _ProcWorker:
    """A host thread driving one worker process; it kills and restarts the process when a
    run overruns its budget plus grace or the process dies."""

    def __init__(self, pool: ProcessPool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.proc: Any = None
        self.conn: Any = None
        self.loaded: set[str] = set()
        self.ready = threading.Event()
        self.busy = threading.Event()  # a run is in the worker process
        self.thread = threading.Thread(target=self._main, name=f"walle-proc-{index}", daemon=True)

    def _start(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(
            target=_child_main,
            args=(child, self.pool.memory_mb, self.pool.wall_dirs, runtime_dirs()),
            name=f"walle-task-proc-{self.index}",
            daemon=True,
        )
        proc.start()
        child.close()
        # The child reports what its OS wall could apply before it serves any run.
        if not parent.poll(60):
            proc.kill()
            raise RuntimeError("the worker process did not start")
        report = boundary.accept_report(parent.recv_bytes())
        if self.pool.wall_dirs is not None:
            self.pool.wall_report = report
        self.proc, self.conn, self.loaded = proc, parent, set()

    def _try_start(self) -> bool:
        try:
            self._start()
            return True
        except Exception:
            log.exception("walle VM could not start a worker process")
            self.proc = None
            return False

    def _kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.join(5)
            self.conn.close()
            self.proc = None
            self.pool.restarts += 1

    def _main(self) -> None:
        self._try_start()
        self.ready.set()
        while True:
            job = self.pool.jobs.get()
            if job is None:
                break
            if not job.start():
                continue
            if self.proc is None and not self._try_start():
                job.finish(_vm_error("could not start a task worker process (see the log)"))
                continue
            self.busy.set()
            try:
                resp = self._run(job)
            finally:
                self.busy.clear()
            job.finish(resp)
            job = resp = None  # see _InterpWorker: don't keep the result alive while idle
        if self.proc is not None:
            try:
                self.conn.send_bytes(b"")
                self.proc.join(2)
            except OSError:
                pass
            if self.proc.is_alive():
                self.proc.kill()
            self.conn.close()

    def _run(self, job: Job) -> dict[str, Any]:
        try:
            # CPU allowance for the run (all threads), a backstop behind the host's kill.
            cpu_s = (job.timeout_s + self.pool.grace_s) * (os.cpu_count() or 1) + 1
            self.conn.send_bytes(_HEADER.pack(cpu_s) + job.encode(self.loaded, copy_buffers=True))
            if self.conn.poll(job.timeout_s + self.pool.grace_s):
                resp = boundary.accept(self.conn.recv_bytes(), job.limits)
                self.loaded.add(job.key)
                if resp.get("budget") or resp.get("recycle"):
                    self._kill()  # start the next run from a clean process
                return resp
            self._kill()
            return _stuck_response(job, self.pool.grace_s, hard_killed=True)
        except (EOFError, OSError) as e:
            code = None
            if self.proc is not None:
                self.proc.join(2)  # reap it, so the exit code (or signal) is known
                code = self.proc.exitcode
            self._kill()
            how = f"exit code {code}"
            if code is not None and code < 0:
                try:
                    how = f"signal {signal.Signals(-code).name}"
                except ValueError:
                    how = f"signal {-code}"
            return {
                "ok": False,
                "error_type": "WorkerCrashed",
                "traceback": "",
                "crash": True,
                "message": f"the task's worker process died ({how}): {e!r}; "
                "a memory limit, the OS wall's CPU limit or a crash in native code are "
                "the usual causes",
            }


class ProcessPool:
    """Pre-started worker processes (spawn) for tasks that need numpy or a hard kill."""

    def __init__(
        self,
        size: int,
        *,
        grace_s: float = 2.0,
        memory_mb: int | None = None,
        wall_dirs: tuple[str, ...] | None = None,
    ) -> None:
        self.size = size
        self.grace_s = grace_s
        self.memory_mb = memory_mb
        # Directories a walled worker may read (None: no OS wall); what the last worker
        # started could apply (oswall.apply's report).
        self.wall_dirs = wall_dirs
        self.wall_report: dict[str, Any] | None = None
        self.restarts = 0
        self.jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self.workers = [_ProcWorker(self, i) for i in range(size)]
        for w in self.workers:
            w.thread.start()

    def wait_ready(self, timeout: float = 60.0) -> None:
        end = time.monotonic() + timeout
        for w in self.workers:
            w.ready.wait(max(0.0, end - time.monotonic()))

    def submit(self, job: Job) -> None:
        self.jobs.put(job)

    def close(self, timeout: float = 10.0) -> None:
        for _ in self.workers:
            self.jobs.put(None)
        end = time.monotonic() + timeout
        for w in self.workers:
            w.thread.join(max(0.0, end - time.monotonic()))


Backend = InterpreterPool | ProcessPool
OnDisabled = Callable[[str, str], None]
