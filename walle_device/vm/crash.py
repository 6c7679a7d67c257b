"""Crash containment for the device runtime: which task was running when the process died
in native code, how often each task version did that, and a supervisor that restarts the
runtime and quarantines a task version after `quarantine_after` crashes.

- `BlackBox` is a small memory-mapped file with one slot per worker thread: the VM writes
  the task key into its worker's slot before a run and clears it after. A store into a
  shared file mapping needs no system call and survives the process dying from a signal,
  so after a crash the supervisor reads which task versions were running.
- `CrashLedger` (JSON next to it) counts crashes per task version and holds the
  quarantine list; the VM refuses runs of a quarantined version with `TaskQuarantined`
  and the reason, which the device reports to the cloud like any failed run.
- `supervise()` runs the device runtime as a child process, and on a death by signal
  records the crash against the running tasks, prints which they were, and restarts it.
  The child enables faulthandler, so the crash's Python traceback (task frames read
  `<task ID>`) is in its stderr too.
"""

from __future__ import annotations

import json
import mmap
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

SLOTS = 64
SLOT_BYTES = 256
BLACKBOX_NAME = "running.bin"
LEDGER_NAME = "crashes.json"
CRASH_SIGNALS = frozenset(
    {signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGABRT, signal.SIGSYS}
)
RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)
_PR_SET_PDEATHSIG = 1


class BlackBox:
    """One slot per worker: the key of the task version it is running, or empty."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.ftruncate(fd, SLOTS * SLOT_BYTES)
            self.map = mmap.mmap(fd, SLOTS * SLOT_BYTES)
        finally:
            os.close(fd)
        self._free = list(range(SLOTS - 1, -1, -1))
        self._lock = threading.Lock()

    def take_slot(self) -> int | None:
        with self._lock:
            return self._free.pop() if self._free else None

    def give_slot(self, slot: int | None) -> None:
        if slot is None:
            return
        self.leave(slot)
        with self._lock:
            self._free.append(slot)

    def enter(self, slot: int | None, key: str) -> None:
        if slot is None:
            return
        data = key.encode("utf-8", "replace")[: SLOT_BYTES - 1]
        start = slot * SLOT_BYTES
        self.map[start + 1 : start + 1 + len(data)] = data
        self.map[start + 1 + len(data)] = 0
        self.map[start] = 1  # written last: a slot is either whole or empty

    def leave(self, slot: int | None) -> None:
        if slot is not None:
            self.map[slot * SLOT_BYTES] = 0

    def clear(self) -> None:
        for slot in range(SLOTS):
            self.map[slot * SLOT_BYTES] = 0

    def close(self) -> None:
        self.clear()
        self.map.close()

    @staticmethod
    def read(path: str | Path) -> list[str]:
        """The task keys a (dead) process was running, from its black box file."""
        try:
            data = Path(path).read_bytes()
        except OSError:
            return []
        keys = []
        for slot in range(min(SLOTS, len(data) // SLOT_BYTES)):
            start = slot * SLOT_BYTES
            if data[start] == 1:
                raw = data[start + 1 : start + SLOT_BYTES].split(b"\0", 1)[0]
                keys.append(raw.decode("utf-8", "replace"))
        return keys


def task_of(key: str) -> str:
    """The task id of a task version key ("task_id@digest")."""
    return key.rpartition("@")[0] or key


class CrashLedger:
    """Crash counts and the quarantine list per task version, kept in a JSON file."""

    def __init__(self, path: str | Path, quarantine_after: int = 2) -> None:
        self.path = Path(path)
        self.quarantine_after = quarantine_after
        self._lock = threading.Lock()

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _save(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, self.path)

    def record(self, key: str, reason: str) -> dict[str, Any]:
        """Count one crash of task version `key`; its entry (quarantined once at N)."""
        with self._lock:
            data = self._load()
            entry = data.setdefault(key, {"crashes": 0})
            entry["crashes"] += 1
            entry["last"] = reason[:500]
            entry["at"] = time.time()
            if entry["crashes"] >= self.quarantine_after:
                entry["quarantined"] = (
                    f"quarantined after {entry['crashes']} crashes of the device runtime "
                    f"while it ran; last: {reason}"
                )[:1000]
            self._save(data)
            return dict(entry)

    def quarantined(self, key: str) -> str:
        """The quarantine reason of task version `key`, or ''."""
        with self._lock:
            return str(self._load().get(key, {}).get("quarantined", ""))

    def release(self, key: str) -> None:
        with self._lock:
            data = self._load()
            if data.pop(key, None) is not None:
                self._save(data)


def _describe(returncode: int) -> str:
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


def record_crash(crash_dir: str | Path, how: str, quarantine_after: int = 2) -> list[dict]:
    """After the runtime died: charge the crash to every task version its black box shows
    running; returns one entry per task (key, crashes, quarantined reason if any)."""
    crash_dir = Path(crash_dir)
    keys = BlackBox.read(crash_dir / BLACKBOX_NAME)
    ledger = CrashLedger(crash_dir / LEDGER_NAME, quarantine_after)
    out = []
    for key in sorted(set(keys)):
        entry = ledger.record(key, f"the device runtime died ({how}) while running {key}")
        out.append({"key": key, "task": task_of(key), **entry})
    return out


def die_with_parent() -> None:
    """In the supervised child: get SIGTERM when the supervisor dies (even by kill -9), so
    a device never runs twice with one identity. Linux; elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def supervise(
    cmd: list[str],
    crash_dir: str | Path,
    *,
    quarantine_after: int = 2,
    max_restarts: int | None = None,
    out: Any = None,
) -> int:
    """Run `cmd` (the device runtime) and restart it whenever it dies from a signal; the
    child's exit code otherwise. SIGINT/SIGTERM are passed on to the child."""
    out = out or sys.stderr
    restarts = 0
    child: subprocess.Popen[bytes] | None = None
    stopping = threading.Event()

    def forward(signum: int, _frame: Any) -> None:
        stopping.set()
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    old = {
        s: signal.signal(s, forward)
        for s in (signal.SIGINT, signal.SIGTERM)
        if threading.current_thread() is threading.main_thread()
    }
    try:
        while True:
            child = subprocess.Popen(cmd)
            rc = child.wait()
            if stopping.is_set() or rc >= 0 or -rc not in CRASH_SIGNALS:
                return rc
            how = _describe(rc)
            crashed = record_crash(crash_dir, how, quarantine_after)
            names = ", ".join(c["task"] for c in crashed) or "no task (between runs)"
            print(f"walle: the device runtime crashed ({how}) while running {names}", file=out)
            for c in crashed:
                if c.get("quarantined"):
                    print(f"walle: task {c['task']} is quarantined: {c['quarantined']}", file=out)
            out.flush()
            restarts += 1
            if max_restarts is not None and restarts > max_restarts:
                return rc
            if stopping.wait(RESTART_BACKOFF_S[min(restarts, len(RESTART_BACKOFF_S)) - 1]):
                return rc
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
