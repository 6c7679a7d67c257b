"""The notice fan-out of one server process (devices/push.py): one frame to each matching
socket, a dead socket does not stop the rest, and the loop gets a turn only when the
writing has held it for FAN_OUT_TURN_S."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from devices import counters, push


class FakeSocket:
    def __init__(self, uid: str, cost_s: float = 0.0, fail: bool = False) -> None:
        self.device_uid = uid
        self.cost_s = cost_s
        self.fail = fail
        self.frames: list[str] = []

    async def send(self, text_data=None, bytes_data=None, close=False) -> None:
        # Like daphne's send: writes and returns without suspending.
        until = time.monotonic() + self.cost_s
        while time.monotonic() < until:
            pass
        if self.fail:
            raise ConnectionError("socket gone")
        self.frames.append(text_data)


def notice(uids: list[str]) -> dict:
    return {"type": "release.notice", "app": 1, "task": "t", "version": 3, "digest": "d" * 64,
            "device_uids": uids}  # fmt: skip


def registry_of(sockets: list[FakeSocket]) -> push.Registry:
    registry = push.Registry()
    for socket in sockets:
        registry.add(socket)
    return registry


def test_each_listed_socket_gets_one_frame_and_a_dead_one_does_not_stop_the_rest():
    sockets = [FakeSocket(f"d{i}", fail=i == 3) for i in range(10)]
    registry = registry_of(sockets)
    fanout_before = counters.NOTICE_FANOUT_SECONDS._value.get()
    sent = asyncio.run(
        registry.fan_out(notice([f"d{i}" for i in range(0, 10, 1) if i != 7] + ["x"]))
    )
    assert sent == 8  # 10 sockets, d7 not listed, d3 dead, "x" not connected here
    for i, socket in enumerate(sockets):
        expected = 0 if i in (3, 7) else 1
        assert len(socket.frames) == expected, i
    frame = json.loads(sockets[0].frames[0])
    assert (frame["type"], frame["task"], frame["version"]) == ("notify", "t", 3)
    assert registry.notices_sent == 8
    assert counters.NOTICE_FANOUT_SECONDS._value.get() > fanout_before


@pytest.mark.parametrize("turn_s, yields", [(0.01, True), (60.0, False)])
def test_the_loop_gets_a_turn_only_after_the_turn_budget(monkeypatch, turn_s, yields):
    monkeypatch.setattr(push, "FAN_OUT_TURN_S", turn_s)
    sockets = [FakeSocket(f"d{i}", cost_s=0.001) for i in range(60)]  # ~60 ms of writing
    registry = registry_of(sockets)

    async def main() -> int:
        seen: list[int] = []

        async def other() -> None:  # e.g. the start call's response, waiting for the loop
            seen.append(sum(len(s.frames) for s in sockets))

        task = asyncio.ensure_future(other())
        await registry.fan_out(notice([s.device_uid for s in sockets]))
        await task
        return seen[0]

    written_when_other_ran = asyncio.run(main())
    if yields:
        assert 0 < written_when_other_ran < len(sockets)
    else:
        assert written_when_other_ran == len(sockets)
