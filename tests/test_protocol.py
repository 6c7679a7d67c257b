from __future__ import annotations

import json

import pytest

from walle_device import protocol
from walle_device.protocol import ProtocolError


def test_every_type_round_trips_through_encode_and_decode():
    samples = [
        protocol.message(
            "hello",
            attrs={"model": "Pixel 8", "tags": ["beta"]},
            current={"t": {"version": 1, "digest": "d"}},
        ),
        protocol.message(
            "desired",
            tasks=[
                {"task": "t", "version": 2, "digest": "d", "manifest_url": "/m", "deployment": 7}
            ],
            server_time=1.0,
        ),
        protocol.message("notify", task="t", version=2, digest="d"),
        protocol.message("report", id="r1", deployment=7, state="succeeded"),
        protocol.message(
            "report", id="r2", deployment=7, state="failed", error_code="hash_mismatch", error="bad"
        ),
        protocol.message(
            "run_stats", id="s1", task="t", version=2, runs=3, errors=1, latency_ms_p50=1.5
        ),
        protocol.message(
            "upload", id="u1", items=[{"key": "k", "task": "t", "version": 2, "payload": {"x": 1}}]
        ),
        protocol.message("upload_ack", keys=["k"]),
        protocol.message("ack", ref="r1"),
        protocol.message("ping", t=1.0),
        protocol.message("pong", t=1.0),
        protocol.message("error", code="invalid", message="no"),
    ]
    assert {m["type"] for m in samples} == set(protocol.SCHEMAS)
    for msg in samples:
        assert protocol.decode(protocol.encode(msg)) == msg


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "malformed"),
        ("[1, 2]", "invalid"),
        ('{"v": 1}', "invalid"),
        ('{"type": "hello", "v": 99, "attrs": {}, "current": {}}', "unsupported_version"),
        ('{"type": "selfdestruct", "v": 1}', "unknown_type"),
        (
            '{"type": "report", "v": 1, "id": "x", "deployment": "7", "state": "succeeded"}',
            "invalid",
        ),
        (
            '{"type": "report", "v": 1, "id": "x", "deployment": true, "state": "succeeded"}',
            "invalid",
        ),
        ('{"type": "report", "v": 1, "id": "x", "deployment": 7, "state": "exploded"}', "invalid"),
        ('{"type": "report", "v": 1, "id": "x", "deployment": 7, "state": "failed"}', "invalid"),
        ('{"type": "hello", "v": 1, "attrs": {"model": 5}, "current": {}}', "invalid"),
        ('{"type": "hello", "v": 1, "attrs": {}, "current": {"t": 3}}', "invalid"),
        ('{"type": "upload", "v": 1, "id": "u", "items": [{"key": "k"}]}', "invalid"),
        # What no database stores as sent: refused by the parser, never a crash later.
        ('{"type": "ping", "v": 1, "t": NaN}', "malformed"),
        ('{"type": "ping", "v": 1, "t": -Infinity}', "malformed"),
        ('{"type": "ping", "v": 1, "t": 1e999}', "malformed"),
        ('{"type": "ping", "v": 1, "x": 18446744073709551616}', "malformed"),
        ('{"type": "ping", "v": 1, "x": "a\\u0000"}', "malformed"),
        ('{"type": "ping", "v": 1, "x": {"\\ud800": 1}}', "malformed"),
        ('{"type": "ping", "v": 1, "x": ' + "[" * 40 + "]" * 40 + "}", "malformed"),
        ("[" * 100_000 + "]" * 100_000, "malformed"),  # deeper than the C parser goes
        # Ranges of the columns the values go to.
        ('{"type": "report", "v": 1, "id": "x", "deployment": 0, "state": "succeeded"}', "invalid"),
        (
            '{"type": "run_stats", "v": 1, "id": "s", "task": "t", "version": 2147483648, '
            '"runs": 1, "errors": 0}',
            "invalid",
        ),
        (
            '{"type": "run_stats", "v": 1, "id": "s", "task": "t", "version": 1, "runs": 1, '
            '"errors": 0, "latency_ms_p50": -1}',
            "invalid",
        ),
        ('{"type": "hello", "v": 1, "attrs": {"tags": [1]}, "current": {}}', "invalid"),
    ],
)
def test_bad_frames_are_refused_with_a_code(frame, code):
    with pytest.raises(ProtocolError) as info:
        protocol.decode(frame)
    assert info.value.code == code
    assert info.value.message


def test_oversized_frames_are_refused_before_parsing():
    frame = json.dumps(protocol.message("ping", t=1.0)) + " " * 100
    with pytest.raises(ProtocolError) as info:
        protocol.decode(frame, max_bytes=50)
    assert info.value.code == "too_large"


def test_the_frame_limit_counts_utf8_bytes_not_characters():
    frame = json.dumps({"type": "ping", "v": 1, "x": "é" * 600}, ensure_ascii=False)
    assert len(frame) < 1000 < len(frame.encode())
    with pytest.raises(ProtocolError) as info:
        protocol.decode(frame, max_bytes=1000)
    assert info.value.code == "too_large"
    assert protocol.decode(frame, max_bytes=2000)["x"] == "é" * 600


def test_a_refusal_names_the_message_it_refuses():
    with pytest.raises(ProtocolError) as info:
        protocol.decode(
            '{"type": "report", "v": 1, "id": "r7", "deployment": -1, "state": "succeeded"}'
        )
    assert (info.value.code, info.value.ref) == ("invalid", "r7")
    assert info.value.code in protocol.FINAL_ERROR_CODES


def test_canonical_json_is_stable_under_key_order():
    assert protocol.canonical_json({"b": 1, "a": [1, {"d": 2, "c": 3}]}) == protocol.canonical_json(
        {"a": [1, {"c": 3, "d": 2}], "b": 1}
    )


def test_a_desired_entry_is_one_type_on_both_sides():
    from releases.policy import DELIVERY_DEFAULTS

    entry = protocol.DesiredTask("t", 2, "d" * 64, "/content/manifests/x.json", 7, release=3)
    wire = entry.to_wire()
    assert protocol.validate(protocol.message("desired", tasks=[wire], server_time=0.0))[
        "tasks"
    ] == [wire]
    assert protocol.DesiredTask.from_wire({**wire, "newer_field": 1}) == entry
    # An older server omits the delivery controls: the device assumes the release defaults.
    bare = {k: wire[k] for k in ("task", "version", "digest", "manifest_url", "deployment")}
    assert protocol.DesiredTask.from_wire(bare).max_retries == DELIVERY_DEFAULTS["max_retries"]
    assert protocol.DELIVERY_CONTROLS.items() <= DELIVERY_DEFAULTS.items()
