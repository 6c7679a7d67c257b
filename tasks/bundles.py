"""Validation of an uploaded task version: paths, sizes, config and entry point.

Every check raises BundleError with a message that says what is wrong and how to fix it; the
API returns those messages as a 400 with the offending field.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass, field

from django.conf import settings

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


def validate_bundle(files: dict[str, bytes], entry_point: str, config: object) -> Bundle:
    errors: dict[str, list[str]] = {}

    def add(key: str, message: str) -> None:
        errors.setdefault(key, []).append(message)

    if not files:
        add("files", "a version needs at least one file (the entry point script)")
    if len(files) > settings.WALLE_MAX_VERSION_FILES:
        add("files", f"{len(files)} files; at most {settings.WALLE_MAX_VERSION_FILES} are allowed")
    total = 0
    for path, data in files.items():
        problem = check_path(path)
        if problem:
            add("files", problem)
        if len(data) > settings.WALLE_MAX_FILE_BYTES:
            add(
                "files",
                f"{path!r} is {len(data)} bytes; the limit is {settings.WALLE_MAX_FILE_BYTES} bytes per file",
            )
        total += len(data)
    if total > settings.WALLE_MAX_VERSION_BYTES:
        add(
            "files",
            f"the version is {total} bytes; the limit is {settings.WALLE_MAX_VERSION_BYTES} bytes",
        )

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
        else:
            if "run" not in code.co_names:
                add("entry_point", f"{entry_point!r} must define a function run(ctx)")

    for message in check_config(config):
        add("config", message)
    if isinstance(config, dict):
        for model in config.get("models", []) if isinstance(config.get("models"), list) else []:
            if model not in files:
                add("config", f"models lists {model!r}, which is not among the uploaded files")
    if errors:
        raise BundleError(errors)
    assert isinstance(config, dict)
    return Bundle(files=files, entry_point=entry_point, config=config)


def read_zip(data: bytes) -> tuple[dict[str, bytes], dict]:
    """Unpack a .zip bundle with limits; return its files and the walle.json it may carry."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise BundleError({"bundle": ["not a valid .zip file"]}) from None
    files: dict[str, bytes] = {}
    errors: list[str] = []
    total = 0
    with archive:
        infos = [info for info in archive.infolist() if not info.is_dir()]
        if len(infos) > settings.WALLE_MAX_VERSION_FILES + 1:
            raise BundleError(
                {
                    "bundle": [
                        f"{len(infos)} files; at most {settings.WALLE_MAX_VERSION_FILES} are allowed"
                    ]
                }
            )
        for info in infos:
            problem = check_path(info.filename)
            if problem:
                errors.append(problem)
                continue
            # file_size is what the archive claims; read with a cap anyway (a crafted zip can lie).
            limit = settings.WALLE_MAX_FILE_BYTES
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
            if total > settings.WALLE_MAX_VERSION_BYTES:
                raise BundleError(
                    {"bundle": [f"unpacks to more than {settings.WALLE_MAX_VERSION_BYTES} bytes"]}
                )
            files[info.filename] = content
    if errors:
        raise BundleError({"bundle": errors})
    meta: dict = {}
    if BUNDLE_CONFIG_FILE in files:
        try:
            meta = json.loads(files.pop(BUNDLE_CONFIG_FILE))
        except ValueError as exc:
            raise BundleError(
                {"bundle": [f"{BUNDLE_CONFIG_FILE} is not valid JSON: {exc}"]}
            ) from None
        if not isinstance(meta, dict):
            raise BundleError({"bundle": [f"{BUNDLE_CONFIG_FILE} must be a JSON object"]})
    return files, meta
