"""What the VM hands back to the device runtime."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TRACEBACK_MAX_CHARS = 8000
# A run_stats frame's last_error is stored by the server up to 32 KiB of JSON
# (devices.services.MAX_LAST_ERROR_BYTES): these caps fit it even when every character is
# escaped (six bytes each).
LAST_ERROR_MESSAGE_CHARS = 1000
LAST_ERROR_TRACEBACK_CHARS = 4000


@dataclass(frozen=True)
class RunResult:
    """The outcome of one run of a task.

    `output` is the plain-data return value of `run(ctx)`; `uploads` are the payloads the
    task queued with `ctx.upload()` for the tunnel (both empty when the run failed: a
    failed run's uploads and state changes are discarded). On failure `error_type`,
    `message` and `traceback` describe it; the traceback shows task frames only.
    """

    task_id: str
    ok: bool
    output: Any = None
    error_type: str | None = None
    message: str = ""
    traceback: str = ""
    duration_ms: float = 0.0  # execution, from the worker picking the run up to its result
    queue_ms: float = 0.0  # waiting for a free worker (pool acquire)
    uploads: list[Any] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    backend: str = "interpreter"  # or "process"
    timed_out: bool = False
    disabled: bool = False  # this run made the task hit its failure limit
    # Most engine tensor memory the task held at once during the run (model arenas
    # included), as the engine accounts it; None when the engine is not loaded in the worker.
    engine_peak_bytes: int | None = None
    # Engine arrays the task handed over with ctx.return_tensor(name, x) (successful runs):
    # walle_engine.np arrays over the task's own memory, no copy in the interpreter backend.
    tensors: dict[str, Any] = field(default_factory=dict)

    def last_error(self) -> dict[str, str] | None:
        """The `last_error` object of a `run_stats` message, or None for a success."""
        if self.ok:
            return None
        return {
            "type": self.error_type or "Error",
            "message": self.message[:LAST_ERROR_MESSAGE_CHARS],
            "traceback": self.traceback[-LAST_ERROR_TRACEBACK_CHARS:],
        }


@dataclass(frozen=True)
class TaskStatus:
    """Health of one loaded task as the VM sees it."""

    task_id: str
    enabled: bool
    backend: str
    runs: int
    failures: int
    consecutive_failures: int
    disabled_reason: str = ""
