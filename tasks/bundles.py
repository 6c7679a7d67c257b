"""Validation of an uploaded task version: paths, sizes, config and entry point.

Every check raises BundleError with a message that says what is wrong and how to fix it; the
API returns those messages as a 400 with the offending field.

This module never imports Django: the checks that cost CPU or memory on hostile input
(unpacking a zip, compiling the entry point, converting models) run in a resource-limited
worker process (tasks/check_worker.py), which gets its limits as a `Limits` value.
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

PATH_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*(/[A-Za-z0-9_][A-Za-z0-9_.\-]*)*$")
BUNDLE_CONFIG_FILE = "walle.json"

# Top-level config keys the platform understands; anything else is almost always a typo.
# The VM's keys (walle_device/vm, docs/task-authoring.md) plus the platform's own.
CONFIG_KEYS: dict[str, type | tuple[type, ...]] = {
    "params": dict,
    "timeout_s": (int, float),
    "max_memory_mb": int,
    "max_failures": int,
    "state_max_bytes": int,
    "isolation": str,
    "requires": list,
    "trigger": dict,
    "models": list,
    "inputs": dict,
}
ISOLATION_MODES = ("interpreter", "process")


@dataclass(frozen=True)
class Limits:
    """Upload limits (the WALLE_MAX_* settings), handed to code that cannot read settings."""

    max_file_bytes: int
    max_version_bytes: int
    max_files: int


class BundleError(ValueError):
    """An invalid upload; `errors` maps a field (or file path) to the messages about it."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))


@dataclass
class Bundle:
    """A validated upload, ready to be stored as a TaskVersion."""

    files: dict[str, bytes]
    entry_point: str
    config: dict = field(default_factory=dict)


def check_path(path: str) -> str | None:
    """Return why `path` is not acceptable inside a bundle, or None if it is."""
    if not path:
        return "empty file name"
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        return f"{path!r} is an absolute path; use a path relative to the bundle root"
    if "\\" in path:
        return f"{path!r} contains a backslash; use '/' between folders"
    if any(part == ".." for part in path.split("/")):
        return f"{path!r} contains '..'; files must stay inside the bundle"
    if len(path) > 255:
        return f"{path!r} is longer than 255 characters"
    if not PATH_RE.match(path):
        return (
            f"{path!r} has characters that are not allowed: use letters, digits, '_', '-', '.' "
            "and '/' between folders, not starting with '.'"
        )
    return None


def check_config(config: object) -> list[str]:
    if not isinstance(config, dict):
        return ["config must be a JSON object"]
    from walle_device.protocol import loads_strict

    try:
        loads_strict(json.dumps(config, allow_nan=False))
    except (TypeError, ValueError, RecursionError) as exc:
        return [f"config cannot be stored: {exc}"]
    errors = []
    for key, value in config.items():
        expected = CONFIG_KEYS.get(key)
        if expected is None:
            errors.append(
                f"unknown config key {key!r}; known keys: {', '.join(sorted(CONFIG_KEYS))}"
            )
        elif not isinstance(value, expected) or isinstance(value, bool):
            names = " or ".join(
                t.__name__ for t in (expected if isinstance(expected, tuple) else (expected,))
            )
            errors.append(f"config key {key!r} must be a {names}")
    timeout = config.get("timeout_s")
    if (
        isinstance(timeout, int | float)
        and not isinstance(timeout, bool)
        and not 0 < timeout <= 600
    ):
        errors.append("timeout_s must be more than 0 and at most 600 seconds")
    if isinstance(config.get("max_memory_mb"), int) and not 1 <= config["max_memory_mb"] <= 65536:
        errors.append("max_memory_mb must be between 1 and 65536")
    for key in ("models", "requires"):
        if isinstance(config.get(key), list) and not all(isinstance(v, str) for v in config[key]):
            errors.append(f"config key {key!r} must be a list of strings")
            config = {k: v for k, v in config.items() if k != key}
    if isinstance(config.get("requires"), list) and not set(config["requires"]) <= {"numpy"}:
        errors.append("requires may only list 'numpy' (which runs the task in a worker process)")
    if isinstance(config.get("max_failures"), int) and not 1 <= config["max_failures"] <= 1000:
        errors.append("max_failures must be between 1 and 1000")
    if "isolation" in config and config["isolation"] not in ISOLATION_MODES:
        errors.append(f"isolation must be one of {', '.join(ISOLATION_MODES)}")
    if isinstance(config.get("trigger"), dict):
        errors.extend(_check_trigger(config["trigger"]))
    return errors


def _check_trigger(trigger: dict) -> list[str]:
    try:
        from walle_device.stream.spec import validate_trigger
    except ImportError:  # the stream processor is optional for the cloud
        return []
    return [f"trigger: {message}" for message in validate_trigger(trigger)]


def check_sizes(sizes: dict[str, int], limits: Limits) -> list[str]:
    """Problems with the number, names and sizes of a version's files (before or after conversion)."""
    problems = []
    if len(sizes) > limits.max_files:
        problems.append(f"{len(sizes)} files; at most {limits.max_files} are allowed")
    for path, size in sizes.items():
        if problem := check_path(path):
            problems.append(problem)
        if size > limits.max_file_bytes:
            problems.append(
                f"{path!r} is {size} bytes; the limit is {limits.max_file_bytes} bytes per file"
            )
    total = sum(sizes.values())
    if total > limits.max_version_bytes:
        problems.append(
            f"the version is {total} bytes; the limit is {limits.max_version_bytes} bytes"
        )
    return problems


def validate_bundle(
    files: dict[str, bytes], entry_point: str, config: object, limits: Limits
) -> Bundle:
    errors: dict[str, list[str]] = {}

    def add(key: str, message: str) -> None:
        errors.setdefault(key, []).append(message)

    if not files:
        add("files", "a version needs at least one file (the entry point script)")
    for problem in check_sizes({p: len(d) for p, d in files.items()}, limits):
        add("files", problem)

    if not entry_point:
        add("entry_point", "missing: name the Python file that defines run(ctx), e.g. 'main.py'")
    elif entry_point not in files:
        add(
            "entry_point",
            f"{entry_point!r} is not among the uploaded files ({', '.join(sorted(files)) or 'none'})",
        )
    elif not entry_point.endswith(".py"):
        add("entry_point", f"{entry_point!r} must be a .py file")
    else:
        try:
            source = files[entry_point].decode("utf-8")
            code = compile(source, entry_point, "exec")
        except UnicodeDecodeError:
            add("entry_point", f"{entry_point!r} is not UTF-8 text")
        except SyntaxError as exc:
            add("entry_point", f"{entry_point!r} line {exc.lineno}: syntax error: {exc.msg}")
        except (ValueError, RecursionError, OverflowError) as exc:
            # NUL bytes, nesting too deep for the compiler, constants too large. (MemoryError
            # goes up: the check worker reports it with its memory limit.)
            add("entry_point", f"{entry_point!r} cannot be compiled: {type(exc).__name__}: {exc}")
        else:
            if "run" not in code.co_names:
                add("entry_point", f"{entry_point!r} must define a function run(ctx)")

    for message in check_config(config):
        add("config", message)
    if isinstance(config, dict):
        for model in config.get("models", []) if isinstance(config.get("models"), list) else []:
            if isinstance(model, str) and model not in files:
                add("config", f"models lists {model!r}, which is not among the uploaded files")
    if errors:
        raise BundleError(errors)
    assert isinstance(config, dict)
    return Bundle(files=files, entry_point=entry_point, config=config)


def read_zip(source: Path | IO[bytes], limits: Limits) -> tuple[dict[str, bytes], dict]:
    """Unpack a .zip bundle with limits; return its files and the walle.json it may carry.

    Any archive, however broken or crafted, ends in BundleError (zipfile raises many types).
    """
    try:
        return _read_zip(source, limits)
    except BundleError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError) as exc:
        raise BundleError({"bundle": [f"not a usable .zip file: {exc}"]}) from None
    except (ValueError, EOFError, OSError, RuntimeError, KeyError) as exc:
        message = f"not a usable .zip file: {type(exc).__name__}: {str(exc)[:200]}"
        raise BundleError({"bundle": [message]}) from None


def _read_zip(source: Path | IO[bytes], limits: Limits) -> tuple[dict[str, bytes], dict]:
    try:
        archive = zipfile.ZipFile(source)
    except zipfile.BadZipFile:
        raise BundleError({"bundle": ["not a valid .zip file"]}) from None
    files: dict[str, bytes] = {}
    errors: list[str] = []
    total = 0
    with archive:
        infos = [info for info in archive.infolist() if not info.is_dir()]
        if len(infos) > limits.max_files + 1:
            raise BundleError(
                {"bundle": [f"{len(infos)} files; at most {limits.max_files} are allowed"]}
            )
        for info in infos:
            problem = check_path(info.filename)
            if problem:
                errors.append(problem)
                continue
            # file_size is what the archive claims; read with a cap anyway (a crafted zip can lie).
            if info.filename in files:
                errors.append(f"{info.filename!r} is in the archive twice")
                continue
            limit = limits.max_file_bytes
            if info.file_size > limit:
                errors.append(
                    f"{info.filename!r} unpacks to {info.file_size} bytes; the limit is {limit}"
                )
                continue
            with archive.open(info) as fh:
                content = fh.read(limit + 1)
            if len(content) > limit:
                errors.append(f"{info.filename!r} unpacks to more than {limit} bytes")
                continue
            total += len(content)
            if total > limits.max_version_bytes:
                raise BundleError(
                    {"bundle": [f"unpacks to more than {limits.max_version_bytes} bytes"]}
                )
            files[info.filename] = content
    if errors:
        raise BundleError({"bundle": errors})
    meta: dict = {}
    if BUNDLE_CONFIG_FILE in files:
        from walle_device.protocol import loads_strict

        try:
            meta = loads_strict(files.pop(BUNDLE_CONFIG_FILE))
        except (ValueError, UnicodeDecodeError) as exc:
            raise BundleError(
                {"bundle": [f"{BUNDLE_CONFIG_FILE} is not valid JSON: {exc}"]}
            ) from None
        if not isinstance(meta, dict):
            raise BundleError({"bundle": [f"{BUNDLE_CONFIG_FILE} must be a JSON object"]})
    return files, meta
