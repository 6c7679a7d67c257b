"""Run the upload check (tasks/check_worker.py) in a resource-limited process and collect it.

The server process only moves bytes between files and waits; the CPU- and memory-hungry steps
run in the worker with limits on memory, CPU time and output size, plus a wall-clock timeout.
At most WALLE_UPLOAD_CHECK_WORKERS run at once per server process; an upload that finds them
all busy for long answers 503 with Retry-After instead of queueing without bound.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from django.conf import settings
from rest_framework import exceptions

from tasks.bundles import BundleError, Limits

ROOT = Path(__file__).resolve().parent.parent
# How long an upload waits for a free worker slot before the server answers 503.
SLOT_WAIT_S = 30

_slots: threading.BoundedSemaphore | None = None
_slots_lock = threading.Lock()


class ChecksBusy(exceptions.APIException):
    status_code = 503
    default_detail = "every upload check worker is busy; try again in a minute"
    default_code = "busy"


def _semaphore() -> threading.BoundedSemaphore:
    global _slots
    with _slots_lock:
        if _slots is None:
            _slots = threading.BoundedSemaphore(max(1, settings.WALLE_UPLOAD_CHECK_WORKERS))
        return _slots


def limits() -> Limits:
    return Limits(
        max_file_bytes=settings.WALLE_MAX_FILE_BYTES,
        max_version_bytes=settings.WALLE_MAX_VERSION_BYTES,
        max_files=settings.WALLE_MAX_VERSION_FILES,
    )


@dataclass
class CheckedUpload:
    """What the worker accepted: files on disk (path in bundle -> file), entry point, config."""

    files: dict[str, Path]
    entry_point: str
    config: dict
    notes: str


Source = bytes | Path | IO[bytes]


def _copy_in(source: Source, target: Path) -> None:
    if isinstance(source, bytes):
        target.write_bytes(source)
    elif isinstance(source, Path):
        shutil.copyfile(source, target)
    else:
        source.seek(0)
        with open(target, "wb") as out:
            shutil.copyfileobj(source, out, 1024 * 1024)


def _why_it_died(returncode: int, memory_mb: int, cpu_s: int) -> str:
    if returncode == -signal.SIGXCPU or returncode == -signal.SIGKILL:
        return f"checking the upload took more than {cpu_s} s of CPU"
    if returncode == -signal.SIGSEGV:
        return "checking the upload crashed (the input broke a parser); the file is refused"
    if returncode < 0:
        return f"checking the upload was stopped by signal {-returncode}"
    return f"checking the upload failed (exit status {returncode}; memory limit {memory_mb} MB)"


@contextmanager
def checked_upload(
    *,
    files: dict[str, Source] | None = None,
    bundle: Source | None = None,
    entry_point: str = "",
    config: dict | None = None,
    notes: str = "",
) -> Iterator[CheckedUpload]:
    """Check an upload in the worker; yields its result while the output files exist.

    Raises BundleError with what to fix, or ChecksBusy.
    """
    memory_mb = settings.WALLE_UPLOAD_CHECK_MEMORY_MB
    seconds = settings.WALLE_UPLOAD_CHECK_SECONDS
    with tempfile.TemporaryDirectory(prefix="walle-check-") as tmp:
        job = Path(tmp)
        spec: dict = {
            "limits": limits().__dict__,
            "entry_point": entry_point,
            "config": config,
            "notes": notes,
            "memory_mb": memory_mb,
            "cpu_s": seconds,
        }
        if bundle is not None:
            _copy_in(bundle, job / "bundle.zip")
            spec["bundle"] = "bundle.zip"
        else:
            spec["files"] = []
            for i, (path, source) in enumerate((files or {}).items()):
                _copy_in(source, job / f"in-{i}")
                spec["files"].append([path, f"in-{i}"])
        (job / "job.json").write_text(json.dumps(spec))
        slots = _semaphore()
        if not slots.acquire(timeout=SLOT_WAIT_S):
            raise ChecksBusy()
        try:
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith(("WALLE_", "DATABASE"))},
                # One thread: thread pools reserve address space the memory limit counts.
                "OMP_NUM_THREADS": "1",
                "OPENBLAS_NUM_THREADS": "1",
                "PYTHONPATH": str(ROOT),
            }
            proc = subprocess.run(
                [sys.executable, "-m", "tasks.check_worker", str(job)],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=seconds + 10,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise BundleError(
                {"files": [f"checking the upload took longer than {seconds} s; it is refused"]}
            ) from None
        finally:
            slots.release()
        result_file = job / "result.json"
        if not result_file.exists():
            raise BundleError({"files": [_why_it_died(proc.returncode, memory_mb, seconds)]})
        result = json.loads(result_file.read_text())
        if not result["ok"]:
            raise BundleError(result["errors"])
        yield CheckedUpload(
            files={path: job / name for path, name in result["files"]},
            entry_point=result["entry_point"],
            config=result["config"],
            notes=result["notes"],
        )
