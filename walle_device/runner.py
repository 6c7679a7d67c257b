"""Runs a task version once, in the thread-level VM (walle_device.vm); the VM's RunResult is
what the device runtime reports in `run_stats`."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the VM package starts worker pools: import it when a run needs it
    from walle_device.vm.result import RunResult

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

    def __call__(self, active, files: dict[str, bytes], call: dict) -> RunResult:
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
            from walle_device.vm.result import RunResult

            return RunResult(
                task_id,
                ok=False,
                duration_ms=(time.perf_counter() - started) * 1000,
                error_type=type(exc).__name__,
                message=str(exc),
            )
        return self.vm.run(
            task_id, call.get("inputs") or {}, window=call.get("window"), device=self.device
        )
