"""Hypothesis-generated frames for every message type a device can send, through Channels'
WebsocketCommunicator: whatever arrives, the answer is a valid server message (an `error`
frame for what is refused), the socket stays open (no 1011), and nothing unstorable is stored.

Frames are built from the protocol's own schema tables, then mutated field by field: wrong
types, out-of-range and huge numbers, NaN/Infinity, NUL characters and lone surrogates, deep
nesting, long strings, unknown types and versions, and raw bytes.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.testing import WebsocketCommunicator
from hypothesis import HealthCheck, given, seed
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from devices.models import Result, RunStat
from walle_device import protocol
from walle_web.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)

EXAMPLES_PER_TYPE = 60

nasty_numbers = st.sampled_from(
    [
        "NaN",
        "Infinity",
        "-Infinity",
        "1e999",
        "-1e999",
        str(2**63),
        str(2**64),
        str(-(2**63) - 1),
        str(2**31),
        "-1",
        "1.5",
        "0",
        "9" * 400,
        "true",
        "null",
    ]
)
nasty_strings = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        ['"\\u0000"', '"a\\u0000b"', '"\\ud800"', '"\\udfff x"', '"' + "x" * 5000 + '"']
    ),
)


def _raw(value) -> str:
    """A JSON text for `value`; strings starting with a quote are already raw JSON."""
    if isinstance(value, str) and value.startswith('"'):
        return value
    if (
        isinstance(value, str)
        and value
        in (
            "NaN",
            "Infinity",
            "-Infinity",
            "true",
            "null",
        )
    ) or (isinstance(value, str) and value.lstrip("-").replace(".", "").replace("e", "").isdigit()):
        return value
    return json.dumps(value)


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


field_values = st.one_of(
    nasty_numbers,
    nasty_strings,
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers(min_value=30, max_value=3000).map(deep),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3).map(json.dumps),
    st.lists(st.text(max_size=5), max_size=3).map(json.dumps),
)

VALID = {
    "hello": {"attrs": {"model": "Pixel 8", "tags": ["a"]}, "current": {"t": {"version": 1}}},
    "report": {"id": "r1", "deployment": 1, "state": "succeeded"},
    "run_stats": {
        "id": "s1",
        "task": "t",
        "version": 1,
        "runs": 2,
        "errors": 0,
        "latency_ms_p50": 1.5,
        "last_error": {"type": "E", "message": "m"},
    },
    "upload": {"id": "u1", "items": [{"key": "k", "task": "t", "version": 1, "payload": {"x": 1}}]},
    "ping": {"t": 1.0},
}
assert set(VALID) == set(protocol.DEVICE_TO_SERVER)


@st.composite
def frames(draw, mtype: str) -> str | bytes:
    """A frame of `mtype`: valid, or with one field (or a nested one) replaced by junk."""
    fields = dict(VALID[mtype])
    how = draw(st.sampled_from(["field", "nested", "version", "extra", "bytes", "valid"]))
    if how == "bytes":
        return draw(st.binary(max_size=200))
    parts = {"type": json.dumps(mtype), "v": "1"}
    parts.update({k: json.dumps(v) for k, v in fields.items()})
    if how == "field":
        name = draw(st.sampled_from(sorted(fields)))
        parts[name] = draw(field_values)
    elif how == "nested":
        if mtype == "upload":
            item = draw(st.sampled_from(["key", "task", "version", "payload"]))
            junk = draw(field_values)
            parts["items"] = (
                '[{"key": "k", "task": "t", "version": 1, "payload": 1, "'
                + item
                + '": '
                + junk
                + "}]"
            )
        elif mtype == "hello":
            attr = draw(st.sampled_from(["model", "tags", "region", "os"]))
            parts["attrs"] = '{"' + attr + '": ' + draw(field_values) + "}"
        else:
            parts["id"] = draw(field_values)
    elif how == "version":
        parts["v"] = draw(st.sampled_from(["0", "2", "1.0", '"1"', "true", "null", str(2**64)]))
    elif how == "extra":
        parts[draw(st.text(max_size=8))] = draw(field_values)
    return "{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in parts.items()) + "}"


async def _exchange(comm: WebsocketCommunicator, frame: str | bytes) -> dict:
    key = "bytes" if isinstance(frame, bytes) else "text"
    await comm.send_input({"type": "websocket.receive", key: frame})
    raw = await comm.receive_output(timeout=10)
    assert raw["type"] == "websocket.send", (
        f"the server closed the socket: {raw} for {frame!r:.200}"
    )
    answer = protocol.decode(raw["text"], max_bytes=4 * protocol.MAX_FRAME_BYTES)
    assert answer["type"] in protocol.SERVER_TO_DEVICE
    return answer


@pytest.mark.parametrize("mtype", sorted(protocol.DEVICE_TO_SERVER))
def test_no_frame_a_device_can_send_breaks_the_socket(cast, mtype, settings):
    settings.WALLE_DEVICE_FRAME_BURST = 10**6  # the fuzzer is not a flood
    token = cast.tokens[cast.devices[0].uid]
    answers: list[dict] = []

    @seed(20261204)
    @hypothesis_settings(
        max_examples=EXAMPLES_PER_TYPE,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(frame=frames(mtype))
    def check(frame):
        async def go():
            comm = WebsocketCommunicator(
                application, "/ws/device/", headers=[(b"authorization", f"Bearer {token}".encode())]
            )
            connected, _ = await comm.connect()
            assert connected
            answers.append(await _exchange(comm, frame))
            # Still open and answering.
            pong = await _exchange(comm, json.dumps(protocol.message("ping", t=2.0)))
            assert pong["type"] == "pong"
            await comm.disconnect()

        asyncio.run(go())

    check()
    codes = {a.get("code", a["type"]) for a in answers}
    print(mtype, len(answers), sorted(codes))
    # The mutations reach the checks that matter, not only the JSON parser.
    assert "invalid" in codes and "malformed" in codes
    # Whatever was stored is what every database can hold again.
    for row in RunStat.objects.all():
        for value in (row.latency_ms_p50, row.latency_ms_p95):
            assert value is None or 0 <= value <= 1e9
        assert 0 <= row.version < 2**31 and 0 <= row.runs < 2**31
    for result in Result.objects.all():
        protocol.loads_strict(json.dumps(result.payload, allow_nan=False))
