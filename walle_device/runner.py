"""Runs a task version once, in the thread-level VM (walle_device.vm), and turns the VM's
result into the outcome the device runtime reports in `run_stats`."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RunOutcome:
    ok: bool
    duration_ms: float
    output: Any = None
    error_type: str = ""
    message: str = ""
    traceback: str = ""
    uploads: list = field(default_factory=list)
    logs: list = field(default_factory=list)

    def error_dict(self) -> dict | None:
        if self.ok:
            return None
        return {
            "type": self.error_type,
            "message": self.message[:1000],
            "traceback": self.traceback[-4000:],
        }


_shared_vm = None
_shared_lock = threading.Lock()


def shared_vm():
    """The VM for clients built without a runner: one per process, started on first use
    (interpreter workers only; a device that runs numpy tasks passes its own VM with
    process workers, as `python -m walle_device run` does)."""
    global _shared_vm
    with _shared_lock:
        if _shared_vm is None:
            from walle_device.vm import TaskVM

            _shared_vm = TaskVM(process_workers=0)
        return _shared_vm


class VMRunner:
    """Runs task versions in the thread-level VM (walle_device.vm): isolated
    sub-interpreters from a pool, with the task's time and memory budgets."""

    def __init__(self, vm, scope: str, device: dict) -> None:
        self.vm = vm
        self.scope = scope  # several simulated devices may share one VM
        self.device = device

    def __call__(self, active, files: dict[str, bytes], call: dict) -> RunOutcome:
        manifest = active.manifest
        task_id = f"{self.scope}/{active.task}"
        entry = manifest["entry_point"]
        started = time.perf_counter()
        try:
            # Loading the same version again is a no-op in the VM; a new one keeps the state.
            self.vm.load(
                task_id,
                files[entry].decode("utf-8"),
                {p: d for p, d in files.items() if p != entry},
                manifest.get("config") or {},
            )
        except (
            Exception
        ) as exc:  # SandboxViolation, a bad config: the run fails, the device goes on
            return RunOutcome(
                ok=False,
                duration_ms=(time.perf_counter() - started) * 1000,
                error_type=type(exc).__name__,
                message=str(exc),
            )
        result = self.vm.run(
            task_id, call.get("inputs") or {}, window=call.get("window"), device=self.device
        )
        return RunOutcome(
            ok=result.ok,
            duration_ms=result.duration_ms,
            output=result.output,
            error_type=result.error_type or "",
            message=result.message,
            traceback=result.traceback,
            uploads=list(result.uploads),
            logs=list(result.logs),
        )
