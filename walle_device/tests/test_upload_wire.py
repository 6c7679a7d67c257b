"""What a task may upload is what the wire carries: the VM's per-run upload cap fits one
tunnel result and one `upload` frame, whatever the shape of the uploads (one large, many
small), and the plain path splits a run's items over frames that each fit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from walle_device import protocol
from walle_device.pipeline import upload_batches
from walle_device.tunnel import MAX_ITEM_BYTES, Tunnel
from walle_device.vm import TaskVM, guest

# What a plain-path item adds around its payload: a 64-hex key, a task name at its longest.
ENVELOPE = {"key": "k" * 64, "task": "t" * 100, "version": protocol.INT32_MAX, "payload": None}


def _json_size(obj) -> int:
    return len(json.dumps(obj, separators=(",", ":")).encode())


@pytest.mark.parametrize("unit", ["a", '"', "\\", "\x01", "\x7f", "é", "\u4e2d", "\U0001f600"])
def test_strings_are_sized_as_the_json_the_device_sends(unit):
    for n in (0, 1, 70_000):
        text = unit * n
        assert guest.expanded_size(text) == _json_size(text)
        assert guest.expanded_size({text: [text]}) >= _json_size({text: [text]})


def test_upload_cap_fits_one_tunnel_result_and_one_frame():
    # the list a run's uploads become: the cap charges a byte per upload for its separator
    assert guest.UPLOAD_MAX_BYTES + 2 <= MAX_ITEM_BYTES
    item = _json_size(ENVELOPE) - len("null") + guest.UPLOAD_MAX_BYTES
    assert item + 4096 <= protocol.MAX_FRAME_BYTES


@pytest.fixture(scope="module")
def vm():
    with TaskVM(1, process_workers=0) as v:
        yield v


SHAPES = {
    # one string exactly at the cap: brackets 2, quotes 2, separator 1
    "one-large": "ctx.upload('x' * (CAP - 5))",
    # as many of the smallest upload as the cap allows: separators dominate
    "many-tiny": "while True:\n        ctx.upload(0)",
    # mid-sized dicts until refused, non-ASCII text counted in UTF-8 bytes
    "many-dicts": "while True:\n        ctx.upload({'k': 'é' * 500, 'n': [1.5] * 20})",
}


@pytest.mark.parametrize("shape", SHAPES)
def test_whatever_a_run_uploads_fits_a_tunnel_result(vm: TaskVM, tmp_path: Path, shape: str):
    source = (
        f"CAP = {guest.UPLOAD_MAX_BYTES}\n"
        "def run(ctx):\n"
        "    try:\n"
        f"        {SHAPES[shape].replace(chr(10), chr(10) + '    ')}\n"
        "    except ValueError:\n"
        "        pass\n"
        "    return 1\n"
    )
    vm.load(shape, source, config={"timeout_s": 30})
    result = vm.run(shape)
    assert result.ok, result.message
    assert result.uploads
    payload = result.uploads[0] if len(result.uploads) == 1 else result.uploads
    assert _json_size(payload) <= MAX_ITEM_BYTES
    tunnel = Tunnel(tmp_path, "device-1")
    try:
        assert tunnel.complete_fire(shape, 1, 0, payload) is not None
    finally:
        tunnel.close()


def _largest(unit: str) -> st.SearchStrategy[dict]:
    """Items whose payload repeats `unit` up to the most one run may upload."""
    most = (guest.UPLOAD_MAX_BYTES - 5) // (_json_size(unit) - 2)
    return st.integers(0, most).map(lambda n: {**ENVELOPE, "payload": unit * n})


UNITS = ["a", '"', "\x01", "é", "\u4e2d", "\U0001f600"]
items = st.lists(st.one_of([_largest(u) for u in UNITS]), max_size=40) | st.lists(
    st.just({**ENVELOPE, "payload": 1}), max_size=2500
)


@settings(max_examples=60, deadline=None)
@given(items)
def test_plain_uploads_are_split_over_frames_that_fit(run_items):
    batches = upload_batches(run_items)
    assert [item for batch in batches for item in batch] == run_items
    for batch in batches:
        assert len(batch) <= protocol.MAX_UPLOAD_ITEMS
        frame = protocol.encode(protocol.message("upload", id="i" * 32, items=batch))
        assert len(frame.encode()) <= protocol.MAX_FRAME_BYTES
