"""Loading and running converted models, and the tuning cache / profiles."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from walle_engine import _core
from walle_engine._format import ModelFile

__all__ = [
    "Budget",
    "Model",
    "Profile",
    "TensorInfo",
    "budget",
    "export_profile",
    "import_profile",
    "load",
    "model_limits",
    "set_model_limits",
    "tuning_cache_path",
]

_PROFILE_FORMAT = "walle-tuning/1"
_cache_lock = threading.Lock()


@dataclass(frozen=True)
class TensorInfo:
    """Name, dtype and static shape of a model input or output."""

    name: str
    dtype: str
    shape: tuple[int, ...]


def tuning_cache_path() -> Path:
    """Where tuning decisions persist: $WALLE_ENGINE_CACHE_DIR or ~/.cache/walle_engine."""
    base = os.environ.get("WALLE_ENGINE_CACHE_DIR") or Path.home() / ".cache" / "walle_engine"
    return Path(base) / "tuning.json"


def _records_to_json(records: list[tuple[str, str, str, float]]) -> dict[str, Any]:
    return {
        "format": _PROFILE_FORMAT,
        "records": [{"cpu": c, "op": o, "choice": ch, "micros": us} for c, o, ch, us in records],
    }


def _read_records(path: Path) -> list[tuple[str, str, str, float]]:
    data = json.loads(path.read_text())
    if data.get("format") != _PROFILE_FORMAT:
        raise ValueError(f"{path} is not a walle_engine tuning profile ({_PROFILE_FORMAT})")
    return [(r["cpu"], r["op"], r["choice"], float(r.get("micros", 0.0))) for r in data["records"]]


def export_profile(path: str | Path) -> int:
    """Write every tuning decision known to this process; returns how many."""
    records = _core.tuning_records()
    Path(path).write_text(json.dumps(_records_to_json(records), indent=1))
    return len(records)


def import_profile(path: str | Path) -> int:
    """Adopt decisions from a profile (e.g. shipped by the cloud for this device model)."""
    records = _read_records(Path(path))
    _core.tuning_add(records)
    return len(records)


def _load_cache() -> None:
    path = tuning_cache_path()
    try:
        _core.tuning_add(_read_records(path))
    except (OSError, ValueError, KeyError):
        pass  # a missing or stale cache only costs a re-tune


def _save_cache() -> None:
    path = tuning_cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(_records_to_json(_core.tuning_records())))
        os.replace(tmp, path)  # atomic: concurrent loaders never read half a file
    except OSError:
        pass


def _tensor(x: Any) -> _core.Tensor:
    """An engine tensor over `x` without copying when it is already contiguous."""
    if isinstance(x, _core.Tensor):
        return x
    inner = getattr(x, "tensor", None)  # walle_engine.np.ndarray
    if isinstance(inner, _core.Tensor):
        return inner
    if type(x).__module__ == "numpy":
        import numpy as np

        return _core.Tensor(np.require(x, requirements="C"))  # keeps 0-d arrays 0-d
    try:
        return _core.Tensor(x)
    except (TypeError, ValueError):
        from walle_engine import np as wnp  # lists, scalars, strided views

        return wnp.asarray(x).tensor


@dataclass(frozen=True)
class Profile:
    """Per-step times of a model run; ``by_op`` sums them per op type (the step's atomic
    op and kernel, e.g. ``conv:f32_conv_nchw16c_avx512`` or ``binary:add``)."""

    steps: list[tuple[str, float]]  # ("node: op type", seconds), in execution order

    @property
    def total(self) -> float:
        return sum(s for _, s in self.steps)

    @property
    def by_op(self) -> list[tuple[str, int, float]]:
        """(op type, steps, seconds), slowest first."""
        acc: dict[str, list[float]] = {}
        for name, s in self.steps:
            acc.setdefault(name.split(": ", 1)[-1], []).append(s)
        return sorted(((k, len(v), sum(v)) for k, v in acc.items()), key=lambda r: -r[2])

    def table(self, top: int | None = None) -> str:
        """The per-op-type table as text: op type, steps, milliseconds, share."""
        total = self.total or 1.0
        lines = [f"{'op type':44} {'steps':>5} {'ms':>9} {'share':>6}"]
        for op, n, s in self.by_op[:top]:
            lines.append(f"{op:44} {n:5d} {s * 1e3:9.3f} {100 * s / total:5.1f}%")
        lines.append(f"{'total':44} {len(self.steps):5d} {self.total * 1e3:9.3f} 100.0%")
        return "\n".join(lines)


class Budget:
    """What ``budget()`` yields: the task's account (memory, shared by every run of the
    task) and this run's cancel token."""

    def __init__(self, account: _core.Account, token: _core.CancelToken) -> None:
        self.account = account
        self.token = token

    def cancel(self) -> None:
        """Stop this run's model at its next step (TimeoutError); safe from any thread."""
        self.token.cancel()

    @property
    def cancelled(self) -> bool:
        return self.token.cancelled

    def __getattr__(self, name: str) -> Any:  # used, peak, cap, refused, stopped, name
        return getattr(self.account, name)


@contextmanager
def budget(name: str, cap_bytes: int = 0) -> Iterator[Budget]:
    """Charge engine memory allocated on this thread to the account `name` until exit.

    The account (process-wide, shared by every interpreter and every run of the task)
    refuses allocations that would take it over `cap_bytes` (0: no cap) with MemoryError.
    ``cancel()`` on the yielded object, from any thread, stops a model run on this thread
    between steps with TimeoutError; it does not touch other runs charged to the same
    account. Entering restarts the account's peak from what it still holds."""
    acct = _core.account(name)
    acct.cap = cap_bytes
    acct.reset_peak()
    run = Budget(acct, _core.CancelToken())
    previous = _core.bind(acct, run.token)
    try:
        yield run
    finally:
        _core.bind(*previous)


class Model:
    """A loaded model. ``run`` is thread-safe and releases the GIL while computing."""

    def __init__(self, core: _core.Model, source: ModelFile | None = None) -> None:
        self._core = core
        self._source = source  # keeps the memory-mapped constants alive
        self.inputs = [TensorInfo(n, d, tuple(s)) for n, d, s in core.inputs]
        self.outputs = [TensorInfo(n, d, tuple(s)) for n, d, s in core.outputs]
        self._output_names = [o.name for o in self.outputs]
        self._fast_inputs: list[tuple[str, Any, tuple[int, ...]]] | None = None
        self._ndarray: Any = None
        self._asarray: Any = None

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """Run on ``{input name: array}``.

        Outputs are numpy arrays when any input is one; otherwise ``walle_engine.np``
        arrays, so models run where numpy cannot load (isolated sub-interpreters). Inputs
        may also be ``walle_engine.np`` arrays, engine ``Tensor`` objects or anything with
        the buffer protocol; nothing is copied when an input is already C-contiguous."""
        # Fast path for the common call (every input a C-contiguous numpy array of the
        # right dtype and shape): a handful of attribute checks, so a small model's run
        # is not dominated by Python (dtype names, for one, cost microseconds to format).
        fast = self._fast_inputs
        if fast is not None and len(feeds) == len(fast):
            args = []
            for name, dtype, shape in fast:
                x = feeds.get(name)
                if (
                    type(x) is not self._ndarray
                    or x.dtype != dtype
                    or x.shape != shape
                    or not x.flags.c_contiguous
                ):
                    break
                args.append(_core.Tensor(x))
            else:
                outs = self._core.run(args)
                asarray = self._asarray
                return {name: asarray(t) for name, t in zip(self._output_names, outs, strict=True)}
        return self._run_checked(feeds)

    def _run_checked(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        expected = {i.name for i in self.inputs}
        unknown = sorted(set(feeds) - expected)
        if unknown:
            raise ValueError(
                f"unknown input {unknown[0]!r}: this model's inputs are {sorted(expected)}"
            )
        args = []
        as_numpy = False
        for info in self.inputs:
            if info.name not in feeds:
                raise ValueError(f"missing input {info.name!r} ({info.dtype}, shape {info.shape})")
            x = feeds[info.name]
            if type(x).__module__ == "numpy":
                as_numpy = True
                self._enable_fast_path()
                if str(x.dtype) != info.dtype:  # before wrapping: float64 has no tensor type
                    raise ValueError(
                        f"input {info.name!r} must be {info.dtype}, got {x.dtype}: "
                        f"pass x.astype(numpy.{info.dtype})"
                    )
            t = _tensor(x)
            if t.dtype != info.dtype:
                raise ValueError(
                    f"input {info.name!r} must be {info.dtype}, got {t.dtype}: "
                    f"convert it first, e.g. x.astype({info.dtype!r})"
                )
            if tuple(t.shape) != info.shape:
                raise ValueError(
                    f"input {info.name!r} must have shape {info.shape}, got {tuple(t.shape)}"
                )
            args.append(t)
        outs = self._core.run(args)
        if as_numpy:
            import numpy as np

            wrap: Any = np.asarray
        else:
            from walle_engine import np as wnp

            wrap = wnp.asarray
        return {info.name: wrap(t) for info, t in zip(self.outputs, outs, strict=True)}

    def _enable_fast_path(self) -> None:
        """Prepare the numpy fast path of ``run`` (numpy is imported only once a caller
        has passed a numpy array, so sub-interpreters without numpy never load it)."""
        if self._fast_inputs is not None:
            return
        import numpy as np

        self._ndarray = np.ndarray
        self._asarray = np.asarray
        self._fast_inputs = [(i.name, np.dtype(i.dtype), i.shape) for i in self.inputs]

    def plan(self) -> list[dict[str, Any]]:
        """The implementation chosen for every searched op, and why (cache/timed/model)."""
        return self._core.plan()

    def profile(self, feeds: Mapping[str, Any], reps: int = 10) -> Profile:
        """Where the time goes: seconds per atomic step (fastest of ``reps`` runs), and
        per op type (``by_op``, ``table()``) so the next bottleneck is obvious."""
        return Profile(self._core.profile([_tensor(feeds[i.name]) for i in self.inputs], reps))

    def steps(self) -> list[str]:
        """The atomic steps the graph was decomposed into, in execution order."""
        return self._core.steps()

    @property
    def memory(self) -> dict[str, int]:
        """Arena bytes after buffer reuse vs. the sum of all intermediate buffers."""
        return {
            "arena_bytes": self._core.arena_bytes,
            "unplanned_bytes": self._core.unplanned_bytes,
        }

    @property
    def merged_rasters(self) -> int:
        """How many chained raster copies were merged into one."""
        return self._core.merged_rasters


def model_limits() -> dict[str, int]:
    """The size limits a loaded model must keep: ``total_bytes`` (constants, values
    computed at load and the run arena of one model; default 4 GiB) and ``value_bytes``
    (any one value; default 2 GiB)."""
    total, value = _core.model_limits()
    return {"total_bytes": total, "value_bytes": value}


def set_model_limits(*, total_bytes: int | None = None, value_bytes: int | None = None) -> None:
    """Change the size limits of models loaded from now on (process-wide). A model over
    them is refused at load with MemoryError naming the value, before it is allocated."""
    current = model_limits()
    total = current["total_bytes"] if total_bytes is None else total_bytes
    value = current["value_bytes"] if value_bytes is None else value_bytes
    for name, v in (("total_bytes", total), ("value_bytes", value)):
        if type(v) is not int or not 0 < v < 2**63:
            raise ValueError(f"{name} must be a positive number of bytes, got {v!r}")
    _core.set_model_limits(total, value)


def load(
    path: str | Path,
    *,
    tune: bool = True,
    cache: bool = True,
    max_isa: str | None = None,
) -> Model:
    """Load a converted model. With ``tune``, ops are timed once per CPU and op signature;
    decisions persist in ``tuning_cache_path()`` unless ``cache`` is False."""
    f = ModelFile(path)
    if cache:
        with _cache_lock:
            _load_cache()
    core = _core.Model(f.graph(), tune=tune, max_isa=max_isa or _core.detect_isa())
    if cache and tune:
        with _cache_lock:
            _save_cache()
    return Model(core, f)
