"""The device wire protocol: every message between a device and the cloud, in one place.

Devices in the field upgrade last, so this module lives with the device runtime, never imports
Django, and is versioned. The server imports it to parse what devices send and to build what it
sends; tests validate every server message against it.

A message is a JSON object with `type` and the protocol version `v`. The schema of each type
is a table of fields: name -> (accepted Python types, required?). Unknown fields are ignored
(forward compatibility: a newer server may add fields an older device does not know), unknown
types are rejected.
"""

from __future__ import annotations

import json
from typing import Any

PROTOCOL_VERSION = 1
#: Versions this module can read. A server keeps reading older devices' versions.
SUPPORTED_VERSIONS = frozenset({1})
MAX_FRAME_BYTES = 256 * 1024

# Deployment states a device may report, in the order a healthy deployment passes them.
REPORT_STATES = ("downloading", "installed", "succeeded", "failed")
# Error codes a device uses in a failed report.
ERROR_CODES = (
    "download_failed",
    "hash_mismatch",
    "bad_signature",
    "bad_manifest",
    "install_failed",
    "run_failed",
    "timeout",
)

_STR = (str,)
_INT = (int,)
_NUM = (int, float)
_DICT = (dict,)
_LIST = (list,)
_OPT_STR = (str, type(None))
_OPT_INT = (int, type(None))

# type -> {field: (types, required)}
SCHEMAS: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {
    # device -> server: who I am and what I run; answered by `desired`.
    "hello": {
        "attrs": (_DICT, True),
        "current": (_DICT, True),
        "id": (_OPT_STR, False),
    },
    # server -> device: the versions this device should run now (the mailbox).
    "desired": {
        "tasks": (_LIST, True),
        "server_time": (_NUM, True),
        "ref": (_OPT_STR, False),
    },
    # server -> device: the doorbell. State, not an event: idempotent and coalescible.
    "notify": {
        "task": (_STR, True),
        "version": (_INT, True),
        "digest": (_STR, True),
    },
    # device -> server: one deployment transition; idempotent per (deployment, state).
    "report": {
        "id": (_STR, True),
        "deployment": (_INT, True),
        "state": (_STR, True),
        "error_code": (_OPT_STR, False),
        "error": (_OPT_STR, False),
        "at": (_NUM, False),
    },
    # device -> server: task run outcomes since the last run_stats.
    "run_stats": {
        "id": (_STR, True),
        "task": (_STR, True),
        "version": (_INT, True),
        "runs": (_INT, True),
        "errors": (_INT, True),
        "latency_ms_p50": (_NUM, False),
        "latency_ms_p95": (_NUM, False),
        "last_error": ((dict, type(None)), False),
    },
    # device -> server: results through the tunnel, each item with an idempotency key.
    "upload": {
        "id": (_STR, True),
        "items": (_LIST, True),
    },
    # server -> device: keys stored (or already stored: duplicates are acked too).
    "upload_ack": {
        "keys": (_LIST, True),
        "ref": (_OPT_STR, False),
    },
    # server -> device: a message with an `id` was processed (reports, run_stats).
    "ack": {
        "ref": (_STR, True),
    },
    "ping": {"t": (_NUM, False)},
    "pong": {"t": (_NUM, False)},
    # server -> device: what was wrong with a frame; the connection stays open. With
    # `retry_after` (code "busy"): nothing was stored, send the message again after that many
    # seconds; before a close with code 1013 it is how long to wait before reconnecting.
    "error": {
        "code": (_STR, True),
        "message": (_STR, True),
        "ref": (_OPT_STR, False),
        "retry_after": (_NUM, False),
    },
}

DEVICE_TO_SERVER = frozenset({"hello", "report", "run_stats", "upload", "ping"})
SERVER_TO_DEVICE = frozenset({"desired", "notify", "upload_ack", "ack", "pong", "error"})

DESIRED_TASK_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "task": (_STR, True),
    "version": (_INT, True),
    "digest": (_STR, True),
    "manifest_url": (_STR, True),
    "deployment": (_OPT_INT, True),
    "release": (_OPT_INT, False),
    # Delivery controls of the release (protocol v1 additions; older servers omit them).
    "max_retries": (_INT, False),
    "retry_backoff_s": (_NUM, False),
    "pull_jitter_s": (_NUM, False),
}
UPLOAD_ITEM_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "key": (_STR, True),
    "task": (_STR, True),
    "version": (_INT, True),
    "payload": ((dict, list, str, int, float, bool, type(None)), True),
}
ATTR_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "app_version": (_STR, False),
    "os": (_STR, False),
    "os_version": (_STR, False),
    "model": (_STR, False),
    "region": (_STR, False),
    "tags": (_LIST, False),
    "engine_version": (_STR, False),
}


class ProtocolError(ValueError):
    """A frame that is not a valid message; `code` is sent back in an `error` message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _check_fields(where: str, obj: dict, fields: dict[str, tuple[tuple[type, ...], bool]]) -> None:
    for name, (types, required) in fields.items():
        if name not in obj:
            if required:
                raise ProtocolError("invalid", f"{where}: missing field {name!r}")
            continue
        value = obj[name]
        # bool is an int in Python; a JSON true is never a valid integer field here.
        if isinstance(value, bool) and bool not in types:
            raise ProtocolError("invalid", f"{where}: field {name!r} must not be a boolean")
        if not isinstance(value, types):
            names = "/".join("null" if t is type(None) else t.__name__ for t in types)
            raise ProtocolError(
                "invalid", f"{where}: field {name!r} must be {names}, got {type(value).__name__}"
            )


def validate(msg: Any) -> dict:
    """Check a decoded message against its schema and return it; raise ProtocolError if not."""
    if not isinstance(msg, dict):
        raise ProtocolError("invalid", "a message must be a JSON object")
    mtype = msg.get("type")
    if not isinstance(mtype, str):
        raise ProtocolError("invalid", "a message needs a string field 'type'")
    version = msg.get("v")
    if version not in SUPPORTED_VERSIONS or isinstance(version, bool):
        raise ProtocolError(
            "unsupported_version",
            f"protocol version {version!r} is not supported; supported: {sorted(SUPPORTED_VERSIONS)}",
        )
    schema = SCHEMAS.get(mtype)
    if schema is None:
        raise ProtocolError(
            "unknown_type", f"unknown message type {mtype!r}; known: {', '.join(sorted(SCHEMAS))}"
        )
    _check_fields(mtype, msg, schema)
    if mtype == "hello":
        _check_fields("hello.attrs", msg["attrs"], ATTR_FIELDS)
        for task, cur in msg["current"].items():
            if not isinstance(cur, dict) or not isinstance(cur.get("version"), int):
                raise ProtocolError(
                    "invalid",
                    f"hello.current[{task!r}] must be an object with an integer 'version'",
                )
    elif mtype == "desired":
        for i, item in enumerate(msg["tasks"]):
            if not isinstance(item, dict):
                raise ProtocolError("invalid", f"desired.tasks[{i}] must be an object")
            _check_fields(f"desired.tasks[{i}]", item, DESIRED_TASK_FIELDS)
    elif mtype == "report":
        if msg["state"] not in REPORT_STATES:
            raise ProtocolError(
                "invalid",
                f"report: state {msg['state']!r} is not one of {', '.join(REPORT_STATES)}",
            )
        if msg["state"] == "failed" and msg.get("error_code") not in ERROR_CODES:
            raise ProtocolError(
                "invalid",
                f"report: a failed report needs error_code, one of {', '.join(ERROR_CODES)}",
            )
    elif mtype == "upload":
        for i, item in enumerate(msg["items"]):
            if not isinstance(item, dict):
                raise ProtocolError("invalid", f"upload.items[{i}] must be an object")
            _check_fields(f"upload.items[{i}]", item, UPLOAD_ITEM_FIELDS)
    elif mtype == "upload_ack":
        if not all(isinstance(k, str) for k in msg["keys"]):
            raise ProtocolError("invalid", "upload_ack.keys must be strings")
    return msg


def decode(frame: str | bytes, max_bytes: int = MAX_FRAME_BYTES) -> dict:
    """Parse and validate one frame."""
    if len(frame) > max_bytes:
        raise ProtocolError("too_large", f"frame of {len(frame)} bytes exceeds {max_bytes} bytes")
    try:
        msg = json.loads(frame)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError("malformed", f"frame is not valid JSON: {exc}") from None
    return validate(msg)


def encode(msg: dict) -> str:
    """Validate and serialise one message (compact JSON)."""
    validate(msg)
    return json.dumps(msg, separators=(",", ":"), sort_keys=True)


def message(mtype: str, **fields: Any) -> dict:
    """Build a message of `mtype` at the current protocol version."""
    return {"type": mtype, "v": PROTOCOL_VERSION, **fields}


def canonical_json(obj: Any) -> bytes:
    """The bytes a manifest signature covers: sorted keys, no whitespace, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
