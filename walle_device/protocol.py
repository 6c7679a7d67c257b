"""The device wire protocol: every message between a device and the cloud, in one place.

Devices in the field upgrade last, so this module lives with the device runtime, never imports
Django, and is versioned. The server imports it to parse what devices send and to build what it
sends; tests validate every server message against it.

A message is a JSON object with `type` and the protocol version `v`. The schema of each type
is a table of fields: name -> (accepted Python types, required?[, bounds]). Unknown fields are
ignored (forward compatibility: a newer server may add fields an older device does not know),
unknown types are rejected.

Parsing is strict, so what a frame carries can be stored by any database the server runs on:
NaN, Infinity and numbers that overflow a double are refused, integers must fit in 64 bits,
strings may not hold NUL characters or unpaired surrogates, nesting is at most MAX_DEPTH deep,
and the frame limit counts UTF-8 bytes. Every refusal is a ProtocolError, which the server
answers with an `error` frame; the connection stays open.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, fields
from typing import Any

PROTOCOL_VERSION = 1
#: Versions this module can read. A server keeps reading older devices' versions.
SUPPORTED_VERSIONS = frozenset({1})
MAX_FRAME_BYTES = 256 * 1024
#: Deepest nesting of arrays and objects in a frame (a task result is rarely deeper than 5).
MAX_DEPTH = 32
# Integer ranges of the columns these values end up in (PostgreSQL integer / bigint).
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1

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


@dataclass(frozen=True)
class Bound:
    """Range of a number field, or the longest a string or list field may be."""

    lo: float | None = None
    hi: float | None = None
    max_len: int | None = None


_STR = (str,)
_INT = (int,)
_NUM = (int, float)
_DICT = (dict,)
_LIST = (list,)
_OPT_STR = (str, type(None))
_OPT_INT = (int, type(None))

# Bounds shared by several fields.
MSG_ID = Bound(max_len=64)  # message ids are stored (RunStat.message_id) and echoed as `ref`
TASK_NAME = Bound(max_len=100)
VERSION = Bound(0, INT32_MAX)
COUNT = Bound(0, INT32_MAX)
ROW_ID = Bound(1, INT64_MAX)
DIGEST = Bound(max_len=64)
TIME = Bound(-1e12, 1e12)
#: Longest device attribute (model, region, os, ...) and tag; the columns are this long.
ATTR_MAX_LEN = 80
MAX_TAGS = 32
MAX_CURRENT_TASKS = 256
MAX_UPLOAD_ITEMS = 1000

Field = tuple  # (types, required) or (types, required, Bound)

# type -> {field: (types, required[, bounds])}
SCHEMAS: dict[str, dict[str, Field]] = {
    # device -> server: who I am and what I run; answered by `desired`.
    "hello": {
        "attrs": (_DICT, True),
        "current": (_DICT, True, Bound(max_len=MAX_CURRENT_TASKS)),
        "id": (_OPT_STR, False, MSG_ID),
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
        "id": (_STR, True, MSG_ID),
        "deployment": (_INT, True, ROW_ID),
        "state": (_STR, True),
        "error_code": (_OPT_STR, False, Bound(max_len=40)),
        "error": (_OPT_STR, False, Bound(max_len=2000)),
        "at": (_NUM, False, TIME),
    },
    # device -> server: task run outcomes since the last run_stats.
    "run_stats": {
        "id": (_STR, True, MSG_ID),
        "task": (_STR, True, TASK_NAME),
        "version": (_INT, True, VERSION),
        "runs": (_INT, True, COUNT),
        "errors": (_INT, True, COUNT),
        "latency_ms_p50": (_NUM, False, Bound(0, 1e9)),
        "latency_ms_p95": (_NUM, False, Bound(0, 1e9)),
        "last_error": ((dict, type(None)), False),
    },
    # device -> server: results through the tunnel, each item with an idempotency key.
    "upload": {
        "id": (_STR, True, MSG_ID),
        "items": (_LIST, True, Bound(max_len=MAX_UPLOAD_ITEMS)),
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
    "ping": {"t": (_NUM, False, TIME)},
    "pong": {"t": (_NUM, False, TIME)},
    # server -> device: what was wrong with a frame; the connection stays open. `ref` names
    # the refused message when its id could be read. `retry_after` (seconds) marks a refusal
    # to retry later (codes rate_limited, busy, server_error: nothing was stored, send the
    # message again after that many seconds; before a close with code 1013 it is how long to
    # wait before reconnecting); every other code is final.
    "error": {
        "code": (_STR, True),
        "message": (_STR, True),
        "ref": (_OPT_STR, False),
        "retry_after": (_NUM, False, Bound(0, 86_400)),
    },
}

# Error codes after which the device must drop the message instead of sending it again: the
# same bytes would be refused the same way. The RETRY_ERROR_CODES say "send it again later".
FINAL_ERROR_CODES = frozenset(
    {
        "malformed",
        "invalid",
        "too_large",
        "unknown_type",
        "unexpected_type",
        "unsupported_version",
        "rejected",
    }
)
RETRY_ERROR_CODES = frozenset({"rate_limited", "busy", "server_error"})

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


@dataclass(frozen=True, slots=True)
class DesiredTask:
    """One entry of a `desired` message: the version of one task a device should run, and the
    delivery controls of the release that hands it out. The defaults are what a device
    assumes when a server omits a control, and what a release starts from (releases/policy)."""

    task: str
    version: int
    digest: str
    manifest_url: str
    deployment: int | None = None  # None for a pin: nothing to report against
    release: int | None = None
    max_retries: int = 3  # download attempts before the device reports failed
    retry_backoff_s: float = 2.0  # base of the device's exponential backoff between attempts
    pull_jitter_s: float = 0.0  # the device waits up to this long before pulling

    def to_wire(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in DESIRED_TASK_FIELDS}

    @classmethod
    def from_wire(cls, entry: dict[str, Any]) -> DesiredTask:
        """From a checked `desired.tasks[i]` (see check_message); unknown fields are dropped."""
        return cls(**{name: entry[name] for name in DESIRED_TASK_FIELDS if name in entry})


#: The delivery controls a desired entry carries, with the values a device assumes.
DELIVERY_CONTROLS: dict[str, Any] = {
    f.name: f.default
    for f in fields(DesiredTask)
    if f.name in ("max_retries", "retry_backoff_s", "pull_jitter_s")
}
UPLOAD_ITEM_FIELDS: dict[str, Field] = {
    "key": (_STR, True, Bound(max_len=128)),
    "task": (_STR, True, TASK_NAME),
    "version": (_INT, True, VERSION),
    "payload": ((dict, list, str, int, float, bool, type(None)), True),
}
_ATTR = Bound(max_len=ATTR_MAX_LEN)
ATTR_FIELDS: dict[str, Field] = {
    "app_version": (_STR, False, _ATTR),
    "os": (_STR, False, _ATTR),
    "os_version": (_STR, False, _ATTR),
    "model": (_STR, False, _ATTR),
    "region": (_STR, False, _ATTR),
    "tags": (_LIST, False, Bound(max_len=MAX_TAGS)),
    "engine_version": (_STR, False, _ATTR),
}
CURRENT_FIELDS: dict[str, Field] = {
    "version": (_INT, True, VERSION),
    "digest": (_STR, False, DIGEST),
}


class ProtocolError(ValueError):
    """A frame that is not a valid message; `code` is sent back in an `error` message."""

    def __init__(self, code: str, message: str, ref: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref


def check_fields(where: str, obj: dict, fields: dict[str, Field]) -> None:
    for name, (types, required, *bounds) in fields.items():
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
        if bounds and value is not None:
            _check_bound(f"{where}: field {name!r}", value, bounds[0])


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _check_bound(what: str, value: Any, bound: Bound) -> None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ProtocolError("invalid", f"{what} must be a finite number")
        if bound.lo is not None and value < bound.lo:
            raise ProtocolError("invalid", f"{what} must be at least {_num(bound.lo)}, got {value}")
        if bound.hi is not None and value > bound.hi:
            raise ProtocolError("invalid", f"{what} must be at most {_num(bound.hi)}, got {value}")
    elif bound.max_len is not None and len(value) > bound.max_len:
        unit = "characters" if isinstance(value, str) else "entries"
        raise ProtocolError(
            "invalid", f"{what} has {len(value)} {unit}; at most {bound.max_len} are allowed"
        )


def check_attrs(attrs: Any, where: str = "attrs") -> dict:
    """Check device attributes (hello, enrollment) against ATTR_FIELDS; return them."""
    if not isinstance(attrs, dict):
        raise ProtocolError("invalid", f"{where} must be an object")
    check_fields(where, attrs, ATTR_FIELDS)
    for i, tag in enumerate(attrs.get("tags", ())):
        if not isinstance(tag, str):
            raise ProtocolError("invalid", f"{where}.tags[{i}] must be a string")
        _check_bound(f"{where}.tags[{i}]", tag, _ATTR)
    return attrs


def check_item(item: Any, where: str = "item") -> dict:
    """Check one tunnel item (upload.items[i], the HTTP batch) against UPLOAD_ITEM_FIELDS."""
    if not isinstance(item, dict):
        raise ProtocolError("invalid", f"{where} must be an object")
    check_fields(where, item, UPLOAD_ITEM_FIELDS)
    if not item["key"]:
        raise ProtocolError("invalid", f"{where}.key must not be empty")
    return item


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
    check_fields(mtype, msg, schema)
    if mtype == "hello":
        check_attrs(msg["attrs"], "hello.attrs")
        for task, cur in msg["current"].items():
            _check_bound(f"hello.current key {task[:40]!r}", task, TASK_NAME)
            if not isinstance(cur, dict):
                raise ProtocolError(
                    "invalid",
                    f"hello.current[{task!r}] must be an object with an integer 'version'",
                )
            check_fields(f"hello.current[{task!r}]", cur, CURRENT_FIELDS)
    elif mtype == "desired":
        for i, item in enumerate(msg["tasks"]):
            if not isinstance(item, dict):
                raise ProtocolError("invalid", f"desired.tasks[{i}] must be an object")
            check_fields(f"desired.tasks[{i}]", item, DESIRED_TASK_FIELDS)
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
            check_item(item, f"upload.items[{i}]")
    elif mtype == "upload_ack":
        if not all(isinstance(k, str) for k in msg["keys"]):
            raise ProtocolError("invalid", "upload_ack.keys must be strings")
    return msg


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows; send a finite number or null")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} does not fit in a double; send a smaller number")
    return value


def _int64(text: str) -> int:
    # Refuse before int() does the work: a 4,300-digit integer costs real CPU to convert.
    if len(text.lstrip("-")) > 19 or not -INT64_MAX - 1 <= (value := int(text)) <= INT64_MAX:
        raise ValueError(f"integer {text[:40]} does not fit in 64 bits")
    return value


_BAD_TEXT = re.compile(r"[\x00\ud800-\udfff]")


def _check_tree(value: Any, check_text: bool) -> None:
    """Depth, and (when the text had escapes that could produce them) NULs and lone surrogates."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            if depth > MAX_DEPTH:
                raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
            for key, child in node.items():
                if check_text and _BAD_TEXT.search(key):
                    raise ValueError("a key holds a NUL character or an unpaired surrogate")
                stack.append((child, depth + 1))
        elif isinstance(node, list):
            if depth > MAX_DEPTH:
                raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
            stack.extend((child, depth + 1) for child in node)
        elif check_text and isinstance(node, str) and _BAD_TEXT.search(node):
            raise ValueError("a string holds a NUL character or an unpaired surrogate")


def loads_strict(text: str | bytes) -> Any:
    """json.loads that only returns what every database Walle runs on can store.

    Raises ValueError (with a message that says what to fix) for NaN/Infinity, numbers beyond
    a double, integers beyond 64 bits, NUL characters, unpaired surrogates and nesting deeper
    than MAX_DEPTH. REST bodies and device frames all parse through this.
    """
    try:
        value = json.loads(
            text,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
            parse_int=_int64,
        )
    except RecursionError:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels") from None
    # NUL and surrogates can only come from \u escapes: valid JSON text has no raw control
    # characters in strings, and UTF-8 decoding refuses encoded surrogates.
    escapes = ("\\u" in text) if isinstance(text, str) else (b"\\u" in text)
    _check_tree(value, escapes)
    return value


def frame_bytes(frame: str | bytes, limit: int) -> int:
    """Size of a frame in UTF-8 bytes, computed only as far as needed to compare with `limit`."""
    if isinstance(frame, bytes) or len(frame) > limit or len(frame) * 4 <= limit:
        return len(frame)  # a str never has more characters than bytes, nor 4x fewer
    return len(frame.encode("utf-8", "surrogatepass"))


def decode(frame: str | bytes, max_bytes: int = MAX_FRAME_BYTES) -> dict:
    """Parse and validate one frame; a ProtocolError carries the message id when it was readable."""
    size = frame_bytes(frame, max_bytes)
    if size > max_bytes:
        raise ProtocolError(
            "too_large",
            f"frame of {size} or more bytes exceeds {max_bytes} bytes; send less per message",
        )
    try:
        msg = loads_strict(frame)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError("malformed", f"frame is not valid JSON: {exc}") from None
    try:
        return validate(msg)
    except ProtocolError as exc:
        ref = msg.get("id") if isinstance(msg, dict) else None
        if isinstance(ref, str) and len(ref) <= MSG_ID.max_len:
            exc.ref = ref
        raise


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
