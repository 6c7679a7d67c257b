"""The data pipeline's glue on a device: triggers fire task runs, results go to the cloud.

The triggers of the active versions are registered with the stream processor; a fire is
recorded durably in the tunnel before the stream counts it delivered, then the task runs over
its window in the VM. Every run's statistics go up as a `run_stats` message; its results go
through the durable tunnel (one result per fire, keyed so a replay counts once at the cloud)
on a real device, or as plain `upload` messages on a simulated one.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING

from walle_device import protocol
from walle_device.bundles import ActiveVersion, BundleCache
from walle_device.stats import DeviceStats
from walle_device.stream import Stream
from walle_device.tunnel import Tunnel, TunnelError

if TYPE_CHECKING:
    from walle_device.vm.result import RunResult

log = logging.getLogger("walle_device")

TaskRunner = Callable[[ActiveVersion, dict[str, bytes], dict], "RunResult"]
# How long the tunnel waits for the server's `upload_ack` before it tries the batch again.
UPLOAD_ACK_TIMEOUT_S = 10.0


def upload_batches(items: list[dict]) -> list[list[dict]]:
    """Split a run's upload items over `upload` messages that each fit one frame."""
    budget = protocol.MAX_FRAME_BYTES - 4096  # the envelope: type, id, version, brackets
    batches: list[list[dict]] = [[]]
    used = 0
    for item in items:
        size = len(json.dumps(item, separators=(",", ":")).encode()) + 1
        full = len(batches[-1]) >= protocol.MAX_UPLOAD_ITEMS or used + size > budget
        if batches[-1] and full:
            batches.append([])
            used = 0
        batches[-1].append(item)
        used += size
    return batches


class Pipeline:
    """Runs tasks for one device, on activation and on their triggers, and ships what they say.

    `queue(msg)` sends a message that stays pending until the server acks it; `send_frame`
    writes a frame on the current connection (ConnectionError when there is none); `spawn`
    runs a coroutine in the background; `emit(event, data)` tells the device's listeners.
    `stream` and `tunnel` may be set until `start`.
    """

    def __init__(
        self,
        device_id: str,
        cache: BundleCache,
        runner: TaskRunner,
        stats: DeviceStats,
        rng: random.Random,
        *,
        queue: Callable[[dict], Awaitable[None]],
        send_frame: Callable[[str], Awaitable[None]],
        spawn: Callable[[Coroutine], None],
        emit: Callable[[str, dict], None],
        stream: Stream | None = None,
        tunnel: Tunnel | None = None,
    ) -> None:
        self.device_id = device_id
        self.cache = cache
        self.runner = runner
        self.stats = stats
        self.rng = rng
        self._queue = queue
        self._send_frame = send_frame
        self._spawn = spawn
        self._emit = emit
        self.stream = stream
        self.tunnel = tunnel
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tunnel_task: asyncio.Task | None = None
        self._upload_waiters: dict[str, asyncio.Future] = {}
        self._upload_seq = 0

    def start(self, stop: asyncio.Event) -> None:
        """Register the active versions' triggers, re-run fires a crash left, start the stream
        and the tunnel (until `stop`)."""
        self._loop = asyncio.get_running_loop()
        if self.tunnel is not None:
            self._tunnel_task = asyncio.ensure_future(self.tunnel.run(self._tunnel_send, stop))
        if self.stream is None:
            return
        self.stream.on_fire = self._on_fire
        for task, active in self.cache.all_active().items():
            self.register_trigger(task, active)
        if self.tunnel is not None:
            # Fires accepted before a crash whose results were not queued yet: run them now.
            for task, fire_seq, window in self.tunnel.pending_fires():
                self._spawn_fire(task, fire_seq, window)
        self.stream.start()

    async def stop(self) -> None:
        if self.stream is not None:
            await asyncio.to_thread(self.stream.stop)
        if self._tunnel_task is not None:
            await asyncio.gather(self._tunnel_task, return_exceptions=True)

    async def run_activated(self, active: ActiveVersion) -> RunResult:
        """A version just became active (or was confirmed): arm its trigger, run it once."""
        self.register_trigger(active.task, active)
        return await self.run_active(active)

    async def run_active(
        self,
        active: ActiveVersion,
        inputs: dict | None = None,
        window: list | None = None,
        fire_seq: int = -1,
    ) -> RunResult:
        """Run the active version of a task once and report its outcome and uploads."""
        files = self.cache.files(active)
        outcome = await asyncio.to_thread(
            self.runner, active, files, {"inputs": inputs or {}, "window": window}
        )
        self.stats.runs += 1
        self.stats.run_errors += 0 if outcome.ok else 1
        await self._queue(
            protocol.message(
                "run_stats",
                id=uuid.uuid4().hex,
                task=active.task,
                version=active.version,
                runs=1,
                errors=0 if outcome.ok else 1,
                latency_ms_p50=round(outcome.duration_ms, 3),
                latency_ms_p95=round(outcome.duration_ms, 3),
                last_error=outcome.last_error(),
            )
        )
        if self.tunnel is not None and (outcome.uploads or fire_seq >= 0):
            self._settle_in_tunnel(active, fire_seq, outcome)
        elif outcome.uploads:
            await self._upload(active, outcome.uploads)
        self._emit("run", {"task": active.task, "version": active.version, "ok": outcome.ok})
        return outcome

    def _settle_in_tunnel(self, active: ActiveVersion, fire_seq: int, outcome: RunResult) -> None:
        # One result per fire: the key (device, task, version, fire_seq) makes a replayed fire
        # or a resent batch count once at the cloud. A failed run's fire is settled too (its
        # error goes in run_stats), so it is not re-run forever.
        assert self.tunnel is not None
        payload = None
        if outcome.uploads:
            payload = outcome.uploads[0] if len(outcome.uploads) == 1 else outcome.uploads
        try:
            if fire_seq >= 0:
                self.tunnel.complete_fire(active.task, active.version, fire_seq, payload)
            else:
                self.tunnel.enqueue(active.task, active.version, fire_seq, payload)
        except TunnelError as exc:
            # The VM caps uploads at what a tunnel result carries, so this is a bug or a full
            # outbox: say so, settle the fire without its result, keep running.
            log.error("%s v%s: result not queued: %s", active.task, active.version, exc)
            self.stats.run_errors += 1 if outcome.ok else 0
            if fire_seq >= 0:
                self.tunnel.complete_fire(active.task, active.version, fire_seq, None)

    async def _upload(self, active: ActiveVersion, payloads: list) -> None:
        """Without a tunnel: the results as `upload` messages, pending until acked."""
        items = []
        for payload in payloads:
            self._upload_seq += 1
            key = hashlib.sha256(
                f"{self.device_id}|{active.task}|{active.version}|{time.time_ns()}|{self._upload_seq}".encode()
            ).hexdigest()
            items.append(
                {"key": key, "task": active.task, "version": active.version, "payload": payload}
            )
        for batch in upload_batches(items):
            await self._queue(protocol.message("upload", id=uuid.uuid4().hex, items=batch))

    # triggers
    def register_trigger(self, task: str, active: ActiveVersion) -> None:
        if self.stream is None:
            return
        spec = (active.manifest.get("config") or {}).get("trigger")
        try:
            if spec:
                self.stream.register_trigger(task, spec)
            else:
                self.stream.remove_trigger(task)
        except ValueError as exc:  # validated at upload; an old cloud might not have
            self.stats.errors.append(f"trigger of {task} v{active.version}: {exc}")

    def _on_fire(self, task: str, fire_seq: int, window) -> None:
        # Called on the stream's worker thread: record the fire durably (the stream counts it
        # delivered when this returns), then hand the run to the event loop; never block on it.
        data = window.to_dict()
        if self.tunnel is not None:
            self.tunnel.accept_fire(task, fire_seq, data)
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._spawn_fire, task, fire_seq, data)

    def _spawn_fire(self, task: str, fire_seq: int, window: dict) -> None:
        active = self.cache.active(task)
        if active is None:
            if self.tunnel is not None:  # the task is gone: nothing will ever run this fire
                self.tunnel.complete_fire(task, 0, fire_seq)
            return
        self._spawn(
            self.run_active(
                active,
                window=window["events"],
                inputs={"aggregates": window["aggregates"]},
                fire_seq=fire_seq,
            )
        )

    # the tunnel's transport
    async def _tunnel_send(self, items: list[dict]) -> list[str]:
        """One `upload` message, answered by its `upload_ack`."""
        msg_id = uuid.uuid4().hex
        waiter = asyncio.get_running_loop().create_future()
        self._upload_waiters[msg_id] = waiter
        try:
            await self._send_frame(
                protocol.encode(protocol.message("upload", id=msg_id, items=items))
            )
            return await asyncio.wait_for(waiter, timeout=UPLOAD_ACK_TIMEOUT_S)
        finally:
            self._upload_waiters.pop(msg_id, None)

    def upload_acked(self, ref: str, keys: list[str]) -> None:
        """The server stored the tunnel batch `ref`: these keys are durable at the cloud."""
        waiter = self._upload_waiters.pop(ref, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(keys)

    # a simulated app
    async def simulate_events(self, stop: asyncio.Event, per_second: float, seed: int = 0) -> None:
        """Emit a realistic app-session event stream (DESIGN §9 workload) at `per_second`."""
        from walle_device.stream.workload import iter_events

        if self.stream is None or per_second <= 0:
            return
        for event in iter_events(seed):
            if stop.is_set():
                return
            self.stream.emit(
                event["kind"], event["page"], event.get("event", ""), event.get("args")
            )
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.rng.expovariate(per_second))
            except TimeoutError:
                pass
