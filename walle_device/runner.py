"""Runs a task version once. In-process loader: the task's entry point in a fresh module namespace.

The thread-level VM (walle_device.vm) replaces this for isolation and budgets; this loader
keeps the same outcome shape so the runtime reports runs the same way either way.
"""

from __future__ import annotations

import time
import traceback
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


class TaskContext:
    """What a task script sees as `ctx`."""

    def __init__(
        self,
        *,
        config: dict,
        inputs: dict,
        files: dict[str, bytes],
        device: dict,
        window: list | None = None,
    ) -> None:
        self.config = config
        self.params = config.get("params", {})
        self.inputs = inputs
        self._files = files
        self.files = tuple(sorted(files))  # names, as in the VM
        self.device = device
        self.window = window  # None unless a trigger fired the run, as in the VM
        self.state: dict = {}
        self.uploads: list = []
        self.logs: list[str] = []

    def upload(self, payload: Any) -> None:
        self.uploads.append(payload)

    def read(self, name: str) -> bytes:
        return self._files[name]

    def log(self, *parts: Any) -> None:
        self.logs.append(" ".join(str(p) for p in parts)[:2000])


def run_inprocess(
    files: dict[str, bytes],
    entry_point: str,
    config: dict,
    *,
    inputs: dict | None = None,
    device: dict | None = None,
    window: list | None = None,
) -> RunOutcome:
    started = time.perf_counter()
    ctx = TaskContext(
        config=config, inputs=inputs or {}, files=files, device=device or {}, window=window
    )
    try:
        source = files[entry_point].decode("utf-8")
        namespace: dict[str, Any] = {"__name__": f"walle_task_{entry_point[:-3].replace('/', '_')}"}
        exec(compile(source, entry_point, "exec"), namespace)
        output = namespace["run"](ctx)
    except Exception as exc:
        return RunOutcome(
            ok=False,
            duration_ms=(time.perf_counter() - started) * 1000,
            error_type=type(exc).__name__,
            message=str(exc),
            traceback=traceback.format_exc(),
            uploads=ctx.uploads,
            logs=ctx.logs,
        )
    return RunOutcome(
        ok=True,
        duration_ms=(time.perf_counter() - started) * 1000,
        output=output,
        uploads=ctx.uploads,
        logs=ctx.logs,
    )


class VMRunner:
    """Runs task versions in the thread-level VM (walle_device.vm): one isolated
    sub-interpreter per run, with the task's time and memory budgets."""

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
