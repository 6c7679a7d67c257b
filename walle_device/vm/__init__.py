"""Thread-level VM: each task run executes in an isolated sub-interpreter (own GIL) owned
by a pooled worker thread, or in a pre-started worker process when the task asks for
numpy or hard isolation. See docs/task-authoring.md for what task scripts may do."""

from __future__ import annotations

from .result import RunResult, TaskStatus
from .sandbox import SandboxViolation
from .vm import TaskVM

__all__ = ["RunResult", "SandboxViolation", "TaskStatus", "TaskVM"]
