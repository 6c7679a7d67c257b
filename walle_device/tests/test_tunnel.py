"""The tunnel's outbox: idempotency, lanes, bounds, backoff, and delivery under injected faults."""

from __future__ import annotations

import asyncio
import random
import threading
from pathlib import Path
from typing import Any

import pytest

from walle_device.tunnel import Tunnel, TunnelError, result_key


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class FakeCloud:
    """A receiver that stores by key (deduplicating) and misbehaves on purpose."""

    def __init__(
        self,
        seed: int = 0,
        fail: float = 0.0,
        lose_request: float = 0.0,
        lose_ack: float = 0.0,
        partial_ack: float = 0.0,
        dup_ack: float = 0.0,
        delay: float = 0.0,
    ) -> None:
        self.rng = random.Random(seed)
        self.fail, self.lose_request, self.lose_ack = fail, lose_request, lose_ack
        self.partial_ack, self.dup_ack, self.delay = partial_ack, dup_ack, delay
        self.stored: dict[str, Any] = {}
        self.received = 0
        self.batches: list[list[str]] = []

    async def send(self, items: list[dict[str, Any]]) -> list[str]:
        self.batches.append([i["key"] for i in items])
        if self.delay:
            await asyncio.sleep(self.rng.uniform(0, self.delay))
        if self.rng.random() < self.fail:
            raise ConnectionError("HTTP 503")
        if self.rng.random() < self.lose_request:
            return []
        acks = []
        for item in items:
            self.received += 1
            self.stored.setdefault(item["key"], item)
            if self.rng.random() >= self.partial_ack:
                acks.append(item["key"])
        if self.rng.random() < self.lose_ack:
            return []
        if self.rng.random() < self.dup_ack:
            acks += [*acks, "not-a-key-we-sent"]
        return acks


def make_tunnel(tmp_path: Path, **kw: Any) -> Tunnel:
    kw.setdefault("backoff_base_s", 0.0005)
    kw.setdefault("backoff_cap_s", 0.005)
    return Tunnel(tmp_path / "outbox", "dev-1", **kw)


def test_the_key_hashes_device_task_version_and_fire_seq(tmp_path: Path) -> None:
    t = make_tunnel(tmp_path)
    key = t.enqueue("ctr", 3, 17, {"n": 1})
    assert key == result_key("dev-1", "ctr", 3, 17)
    assert key != result_key("dev-1", "ctr", 4, 17) != result_key("dev-2", "ctr", 3, 17)
    assert len(key) == 64


def test_enqueueing_the_same_result_twice_keeps_one_row(tmp_path: Path) -> None:
    t = make_tunnel(tmp_path)
    assert t.enqueue("ctr", 1, 5, {"n": 1}) is not None
    assert t.enqueue("ctr", 1, 5, {"n": 1}) is None
    assert t.pending() == 1


def test_a_result_acked_before_a_restart_is_not_queued_again(tmp_path: Path) -> None:
    cloud = FakeCloud()
    t = make_tunnel(tmp_path)
    t.enqueue("ctr", 1, 5, {"n": 1})
    asyncio.run(t.drain(cloud.send))
    t.close()
    again = make_tunnel(tmp_path)
    assert again.enqueue("ctr", 1, 5, {"n": 1}) is None
    assert again.pending() == 0


def test_it_refuses_bad_lanes_and_oversized_or_unserialisable_payloads(tmp_path: Path) -> None:
    t = make_tunnel(tmp_path, max_item_bytes=100)
    with pytest.raises(TunnelError, match="lane"):
        t.enqueue("ctr", 1, 1, {}, lane="fast")
    with pytest.raises(TunnelError, match="cap is 100"):
        t.enqueue("ctr", 1, 1, {"x": "y" * 200})
    with pytest.raises(TunnelError, match="JSON"):
        t.enqueue("ctr", 1, 1, {"x": object()})
    assert t.pending() == 0


def test_the_realtime_lane_sends_at_once_and_bulk_waits_for_a_batch(tmp_path: Path) -> None:
    clock = Clock()
    cloud = FakeCloud()
    t = make_tunnel(tmp_path, clock=clock, bulk_items=3, bulk_delay_s=10)
    t.enqueue("a", 1, 1, {"n": 1}, lane="bulk")
    assert asyncio.run(t.send_once(cloud.send)) == 0  # one bulk item is not a batch yet
    t.enqueue("a", 1, 2, {"n": 2}, lane="bulk")
    t.enqueue("a", 1, 3, {"n": 3}, lane="bulk")
    assert asyncio.run(t.send_once(cloud.send)) == 3
    t.enqueue("a", 1, 4, {"n": 4}, lane="realtime")
    assert asyncio.run(t.send_once(cloud.send)) == 1
    assert t.pending() == 0


def test_bulk_goes_out_by_bytes_and_by_age(tmp_path: Path) -> None:
    clock = Clock()
    cloud = FakeCloud()
    t = make_tunnel(tmp_path, clock=clock, bulk_items=100, bulk_bytes=1000, bulk_delay_s=10)
    t.enqueue("a", 1, 1, {"blob": "x" * 1200}, lane="bulk")
    assert asyncio.run(t.send_once(cloud.send)) == 1
    t.enqueue("a", 1, 2, {"n": 1}, lane="bulk")
    assert asyncio.run(t.send_once(cloud.send)) == 0
    clock.t += 11
    assert asyncio.run(t.send_once(cloud.send)) == 1


def test_a_batch_stays_under_the_frame_budget(tmp_path: Path) -> None:
    cloud = FakeCloud()
    t = make_tunnel(tmp_path, batch_bytes=10_000)
    for i in range(10):
        t.enqueue("a", 1, i, {"blob": "x" * 3000})
    asyncio.run(t.drain(cloud.send))
    assert [len(b) for b in cloud.batches] == [3, 3, 3, 1]


def test_a_full_outbox_drops_the_oldest_bulk_items_first_and_counts_them(tmp_path: Path) -> None:
    t = make_tunnel(tmp_path, max_items=5)
    keys = [t.enqueue("a", 1, i, {"i": i}, lane="bulk" if i % 2 else "realtime") for i in range(5)]
    t.enqueue("a", 1, 100, {"i": 100})
    t.enqueue("a", 1, 101, {"i": 101})
    assert t.pending() == 5
    assert t.dropped() == 2
    cloud = FakeCloud()
    asyncio.run(t.drain(cloud.send))
    assert keys[1] not in cloud.stored and keys[3] not in cloud.stored
    assert keys[0] in cloud.stored and keys[2] in cloud.stored and keys[4] in cloud.stored


def test_when_only_realtime_items_remain_the_oldest_of_them_goes(tmp_path: Path) -> None:
    t = make_tunnel(tmp_path, max_items=2)
    first = t.enqueue("a", 1, 1, {})
    t.enqueue("a", 1, 2, {})
    t.enqueue("a", 1, 3, {})
    cloud = FakeCloud()
    asyncio.run(t.drain(cloud.send))
    assert first not in cloud.stored and len(cloud.stored) == 2
    assert t.dropped() == 1


def test_failed_items_back_off_exponentially_with_full_jitter(tmp_path: Path) -> None:
    clock = Clock()
    t = make_tunnel(tmp_path, clock=clock, backoff_base_s=1.0, backoff_cap_s=8.0)
    t.enqueue("a", 1, 1, {})

    async def down(items: list[dict[str, Any]]) -> list[str]:
        raise ConnectionError("offline")

    ceilings = []
    for _ in range(6):
        assert asyncio.run(t.send_once(down)) == 1
        delay = t._next_due_in(clock.t)
        ceilings.append(delay)
        assert asyncio.run(t.send_once(down)) == 0 or delay == 0  # not due before its time
        clock.t += delay
    for attempt, d in enumerate(ceilings):
        assert 0 <= d <= min(8.0, 2.0**attempt)
    assert t.failures >= 6


def test_every_result_arrives_once_despite_drops_duplicates_delays_and_5xx(tmp_path: Path) -> None:
    cloud = FakeCloud(
        seed=7,
        fail=0.2,
        lose_request=0.15,
        lose_ack=0.15,
        partial_ack=0.2,
        dup_ack=0.3,
        delay=0.002,
    )
    t = make_tunnel(tmp_path, bulk_items=7, send_timeout_s=1.0)
    keys = {
        t.enqueue("a", 1, i, {"i": i}, lane="bulk" if i % 3 else "realtime") for i in range(300)
    }
    assert asyncio.run(t.drain(cloud.send, timeout=60))
    assert set(cloud.stored) == keys
    assert cloud.received > len(keys)  # the faults really did cause resends
    assert all(cloud.stored[k]["payload"] == {"i": cloud.stored[k]["payload"]["i"]} for k in keys)


def test_a_send_that_hangs_times_out_and_is_retried(tmp_path: Path) -> None:
    cloud = FakeCloud()
    calls = 0

    async def slow_then_fine(items: list[dict[str, Any]]) -> list[str]:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(10)
        return await cloud.send(items)

    t = make_tunnel(tmp_path, send_timeout_s=0.05)
    t.enqueue("a", 1, 1, {})
    assert asyncio.run(t.drain(slow_then_fine, timeout=10))
    assert calls == 2 and len(cloud.stored) == 1


def test_the_sender_loop_wakes_up_for_an_enqueue_from_another_thread(tmp_path: Path) -> None:
    cloud = FakeCloud()
    t = make_tunnel(tmp_path)

    async def main() -> None:
        stop = asyncio.Event()
        runner = asyncio.create_task(t.run(cloud.send, stop))
        await asyncio.sleep(0.01)
        threading.Thread(target=lambda: [t.enqueue("a", 1, i, {}) for i in range(20)]).start()
        for _ in range(500):
            if len(cloud.stored) == 20:
                break
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(runner, 5)

    asyncio.run(main())
    assert len(cloud.stored) == 20 and t.pending() == 0
