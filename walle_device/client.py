"""The device runtime's connection to the cloud: one session at a time, hello/desired sync,
the doorbell, and the messages that must reach the server.

The socket is a doorbell and the server's database the mailbox: on every (re)connect and on
every notice the device says what it runs (`hello`) and the server answers what it should run
(`desired`). `DeviceClient` composes the parts of a device: its identity (enrollment.py),
convergence to the desired state (convergence.py) and the data pipeline (pipeline.py). Reports
and results stay pending until the server acks them and are sent again after a reconnect, so a
dropped connection loses nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from walle_device import protocol
from walle_device.bundles import ActiveVersion, BundleCache
from walle_device.convergence import Converger
from walle_device.enrollment import Identity, backoff_delay, ws_url
from walle_device.pipeline import Pipeline, TaskRunner
from walle_device.runner import VMRunner, shared_vm
from walle_device.stats import DeviceStats
from walle_device.stream import Stream
from walle_device.tunnel import Tunnel

if TYPE_CHECKING:
    from walle_device.vm.result import RunResult

log = logging.getLogger("walle_device")

# Close code of a server that could not take the connection now (RFC 6455: try again later).
TRY_AGAIN_LATER = 1013


class DeviceClient:
    """One device: keeps a connection, converges to the desired state, reports every step.

    `connected` is set while a socket is open. `synced` is set once the server has taken this
    connection (its hello was answered, so the server has registered the socket for notices)
    and the first desired state it answered has been applied: every task converged, or its
    failure reported. Both are cleared when the connection drops.
    """

    def __init__(
        self,
        identity: Identity,
        attrs: dict,
        cache: BundleCache,
        http: httpx.AsyncClient,
        *,
        state_dir: Path | None = None,
        rng: random.Random | None = None,
        runner: TaskRunner | None = None,
        stream: Stream | None = None,
        tunnel: Tunnel | None = None,
    ) -> None:
        self.identity = identity
        self.attrs = attrs
        self.cache = cache
        self.http = http
        self.state_dir = state_dir
        self.rng = rng or random.Random()
        self.stats = DeviceStats()
        self.connected = asyncio.Event()
        self.synced = asyncio.Event()
        self.listeners: list[Callable[[str, dict], None]] = []
        self._ws = None
        self._session_no = 0  # counts connections; a desired state belongs to one
        # Messages awaiting the server's ack, by message id; re-sent after a reconnect.
        self._pending: dict[str, dict] = self._load_pending()
        self._reported: set[tuple[int, str]] = {
            (m["deployment"], m["state"]) for m in self._pending.values() if m["type"] == "report"
        }
        self._background: set[asyncio.Task] = set()
        self._hello_queued = False
        self._hello_id = ""
        self._retry_after = 0.0  # the server's last "busy" hint, for the next reconnect
        self._served = False  # this session got a `desired`: the server is taking us
        # Every task runs in the VM; several clients in one process share one by default.
        self.pipeline = Pipeline(
            identity.device_id,
            cache,
            runner or VMRunner(shared_vm(), identity.device_id, dict(attrs, id=identity.device_id)),
            self.stats,
            self.rng,
            queue=self._queue,
            send_frame=self._send_frame,
            spawn=self._spawn,
            emit=self._emit,
            stream=stream,
            tunnel=tunnel,
        )
        self.converger = Converger(
            identity,
            cache,
            http,
            self.rng,
            self.stats,
            report=self._report,
            reported=self._reported,
            run=self.pipeline.run_activated,
            on_settled=self._settled,
        )

    # The data pipeline's parts may be given after construction (the simulator does).
    @property
    def stream(self) -> Stream | None:
        return self.pipeline.stream

    @stream.setter
    def stream(self, stream: Stream | None) -> None:
        self.pipeline.stream = stream

    @property
    def tunnel(self) -> Tunnel | None:
        return self.pipeline.tunnel

    @tunnel.setter
    def tunnel(self, tunnel: Tunnel | None) -> None:
        self.pipeline.tunnel = tunnel

    async def run_active(
        self,
        active: ActiveVersion,
        inputs: dict | None = None,
        window: list | None = None,
        fire_seq: int = -1,
    ) -> RunResult:
        """Run the active version of a task once and report its outcome and uploads."""
        return await self.pipeline.run_active(active, inputs, window, fire_seq)

    async def simulate_events(self, stop: asyncio.Event, per_second: float, seed: int = 0) -> None:
        """Emit a realistic app-session event stream at `per_second` (see Pipeline)."""
        await self.pipeline.simulate_events(stop, per_second, seed)

    @property
    def pending(self) -> int:
        return len(self._pending)

    # persistence of pending messages (real devices; simulated ones keep them in memory)
    def _pending_path(self) -> Path | None:
        return self.state_dir / "pending.json" if self.state_dir else None

    def _load_pending(self) -> dict[str, dict]:
        path = self._pending_path()
        if path and path.is_file():
            return json.loads(path.read_text())
        return {}

    def _save_pending(self) -> None:
        path = self._pending_path()
        if path:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self._pending))
            os.replace(tmp, path)

    def _spawn(self, coro: Coroutine) -> None:
        # Keep a reference: the event loop holds tasks only weakly.
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _emit(self, event: str, data: dict) -> None:
        for listener in self.listeners:
            listener(event, data)

    # connection
    async def run(self, stop: asyncio.Event) -> None:
        """Stay connected until `stop` is set, reconnecting with backoff."""
        self.pipeline.start(stop)
        attempt = 0
        while not stop.is_set():
            try:
                async with connect(
                    ws_url(self.identity.server),
                    additional_headers={"Authorization": f"Bearer {self.identity.token}"},
                    open_timeout=30,
                    # A server busy for 20 s (the default) must not set off a reconnect storm;
                    # one ping a minute keeps NAT mappings and finds a dead server.
                    ping_interval=60,
                    ping_timeout=120,
                    max_size=protocol.MAX_FRAME_BYTES * 4,
                ) as ws:
                    await self._session(ws, stop)
            except InvalidStatus as exc:
                status = exc.response.status_code
                log.warning(
                    "device %s: server refused the connection (%s)", self.identity.device_id, status
                )
                self.stats.errors.append(f"handshake {status}")
            except ConnectionClosed as exc:
                if exc.rcvd is not None and exc.rcvd.code == TRY_AGAIN_LATER:
                    self.stats.busy += 1
                    log.info("device %s: server busy, reconnecting later", self.identity.device_id)
                else:
                    log.info("device %s: connection lost: %s", self.identity.device_id, exc)
            except (OSError, WebSocketException, TimeoutError) as exc:
                log.info("device %s: connection lost: %s", self.identity.device_id, exc)
            finally:
                self._ws = None
                self.connected.clear()
                self.synced.clear()
            if stop.is_set():
                break
            if self._served:
                attempt = 0  # the server took us: a later drop starts the backoff afresh
            delay = backoff_delay(attempt, self.rng, self._retry_after)
            self._retry_after = 0.0
            self._served = False
            attempt += 1
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except TimeoutError:
                pass
        self.converger.cancel()
        await self.pipeline.stop()

    async def _session(self, ws, stop: asyncio.Event) -> None:
        self._ws = ws
        self._session_no += 1
        self.stats.connects += 1
        await self._send_hello()
        for msg in list(self._pending.values()):
            await self._send(msg)
        self.connected.set()
        stopper = asyncio.ensure_future(stop.wait())
        try:
            while True:
                receiver = asyncio.ensure_future(ws.recv())
                done, _ = await asyncio.wait(
                    {receiver, stopper}, return_when=asyncio.FIRST_COMPLETED
                )
                if stopper in done:
                    receiver.cancel()
                    await ws.close()
                    return
                self._handle(
                    protocol.decode(receiver.result(), max_bytes=protocol.MAX_FRAME_BYTES * 4)
                )
        finally:
            stopper.cancel()

    def _settled(self, session: int) -> None:
        """A sync pass applied the latest desired state, answered in connection `session`."""
        if session == self._session_no and self._ws is not None:
            self.synced.set()

    async def _send(self, msg: dict) -> None:
        if self._ws is not None:
            try:
                await self._ws.send(protocol.encode(msg))
            except WebSocketException:
                pass  # pending messages go again after the reconnect

    async def _send_frame(self, frame: str) -> None:
        """Write a frame now, or raise: for callers that keep their own retries (the tunnel)."""
        if self._ws is None:
            raise ConnectionError("not connected")
        await self._ws.send(frame)

    async def _send_hello(self) -> None:
        self._hello_queued = False
        current = {
            task: {"version": av.version, "digest": av.digest}
            for task, av in self.cache.all_active().items()
        }
        self._hello_id = uuid.uuid4().hex
        await self._send(
            protocol.message("hello", attrs=self.attrs, current=current, id=self._hello_id)
        )

    async def _send_again_later(self, ref: str | None, delay: float) -> None:
        """The server was busy and stored nothing: send that message again after `delay`."""
        await asyncio.sleep(delay * self.rng.uniform(1.0, 1.5))
        if ref is not None and ref in self._pending:
            await self._send(self._pending[ref])
        elif ref is not None and ref == self._hello_id:
            await self._send_hello()

    def _handle(self, msg: dict) -> None:
        mtype = msg["type"]
        if mtype == "desired":
            self._served = True
            tasks = [protocol.DesiredTask.from_wire(entry) for entry in msg["tasks"]]
            self.converger.apply(tasks, self._session_no)
        elif mtype == "notify":
            self.stats.notices += 1
            if self.stats.first_notice_at is None:
                self.stats.first_notice_at = time.time()
            self._emit("notify", msg)
            # Ring → look in the mailbox. Even for a version already running here: the notice
            # may come from a new release (a rollback) that waits for this device's report.
            if not self._hello_queued:
                self._hello_queued = True
                self._spawn(self._send_hello())
        elif mtype in ("ack", "upload_ack"):
            ref = msg.get("ref")
            if ref and mtype == "upload_ack":
                self.pipeline.upload_acked(ref, msg["keys"])
            if ref and self._pending.pop(ref, None) is not None:
                self._save_pending()
        elif mtype == "error":
            log.warning(
                "device %s: server error %s: %s",
                self.identity.device_id,
                msg["code"],
                msg["message"],
            )
            self.stats.errors.append(f"{msg['code']}: {msg['message']}")
            if msg.get("retry_after") is not None:
                # Busy: nothing was stored. Send the message again later (or, before a close
                # with 1013, reconnect later); it stays pending meanwhile.
                self._retry_after = float(msg["retry_after"])
                if msg.get("ref"):
                    self._spawn(self._send_again_later(msg["ref"], self._retry_after))
            # A rejected message will be rejected again: do not resend it forever.
            if (
                msg.get("ref")
                and msg["code"] in protocol.FINAL_ERROR_CODES
                and self._pending.pop(msg["ref"], None) is not None
            ):
                self._save_pending()

    # messages that must reach the server
    async def _report(
        self,
        deployment: int,
        state: str,
        *,
        error_code: str | None = None,
        error: str | None = None,
    ) -> None:
        """Report a deployment's step, once per (deployment, state), pending until acked."""
        if (deployment, state) in self._reported:
            return
        self._reported.add((deployment, state))
        fields: dict[str, Any] = {
            "id": uuid.uuid4().hex,
            "deployment": deployment,
            "state": state,
            "at": time.time(),
        }
        if error_code:
            fields["error_code"] = error_code
            fields["error"] = (error or "")[:1000]
        self._emit("report", fields)
        await self._queue(protocol.message("report", **fields))

    async def _queue(self, msg: dict) -> None:
        self._pending[msg["id"]] = msg
        self._save_pending()
        await self._send(msg)
