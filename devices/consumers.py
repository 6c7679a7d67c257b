"""The device websocket: authenticate, check each frame, hand it to the ingest writer.

A frame is decoded and checked on the event loop (`check_frame`: the one place for per-frame
checks), then queued for the process's ingest writer (devices/ingest.py), which applies it
in a batch transaction. The answer (`desired`, `ack`, `upload_ack`) is sent only after that
commit; a full queue is answered at once with `error` code "busy" and `retry_after`.
"""

from __future__ import annotations

import asyncio
import logging
import time

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from devices import counters, limits
from devices.ingest import Busy, Item, Rejected, ingest
from devices.push import registry
from walle_device import protocol

log = logging.getLogger(__name__)

_answering: set[asyncio.Task] = set()
# Close code of a handshake the server could not take in time (RFC 6455: try again later).
TRY_AGAIN_LATER = 1013


def _header(scope: dict, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return ""


def _answer(item: Item) -> dict:
    """The reply to a device message once its batch committed."""
    msg = item.payload
    if isinstance(item.error, Busy):
        return protocol.message(
            "error",
            code="busy",
            message=str(item.error),
            ref=msg.get("id"),
            retry_after=item.error.retry_after,
        )
    if isinstance(item.error, protocol.ProtocolError):
        return protocol.message(
            "error", code=item.error.code, message=item.error.message, ref=msg.get("id")
        )
    if isinstance(item.error, Rejected):
        return protocol.message(
            "error", code="rejected", message=str(item.error), ref=msg.get("id")
        )
    if item.error is not None:
        return protocol.message(
            "error",
            code="server_error",
            message="the server failed to apply this message; send it again later",
            ref=msg.get("id"),
            retry_after=5.0,
        )
    if item.kind == "hello":
        return protocol.message(
            "desired", tasks=item.result or [], server_time=time.time(), ref=msg.get("id")
        )
    if item.kind == "upload":
        return protocol.message("upload_ack", keys=item.result, ref=msg["id"])
    return protocol.message("ack", ref=msg["id"])


class DeviceConsumer(AsyncWebsocketConsumer):
    # No channel-layer channel per socket: notices reach sockets through the process registry
    # (devices/push.py). A channel per socket made every receive walk all channels of the
    # in-process layer (O(N^2) at 10k sockets) and would be one Redis subscription each.
    channel_layer_alias = None
    device_uid = ""
    device = None
    presence_stamp = None  # the last_seen this socket wrote (devices.services.record_presence)
    closed = False

    async def dispatch(self, message: dict) -> None:
        # Channels closes "old" database connections around every frame, a thread hop per
        # message; this consumer never touches the database on the loop (the ingest writer
        # owns its connection), so it dispatches directly.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
        scheme, _, token = _header(self.scope, b"authorization").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            await self.close()  # before accept: HTTP 403, the device re-enrolls
            return
        try:
            future = ingest().submit("auth", None, token.strip())
            item = await asyncio.wait_for(
                asyncio.shield(future), timeout=settings.WALLE_CONNECT_BUDGET_S
            )
        except Busy as exc:
            await self.try_again_later(exc.retry_after)
            return
        except TimeoutError:
            future.cancel()  # the writer skips it: the device is told to come back later
            await self.try_again_later(ingest().retry_after())
            return
        if isinstance(item.error, Busy):
            await self.try_again_later(item.error.retry_after)
            return
        if item.result is None:
            await self.close()  # a wrong token: HTTP 403, the device re-enrolls
            return
        self.device = item.result
        self.device_uid = self.device.uid
        # The handshake's headers (the bearer token among them) are not read again: an idle
        # socket does not keep them (one list shared by every copy of the scope).
        headers = self.scope.get("headers")
        if isinstance(headers, list):
            headers.clear()
        await self.accept()
        registry.add(self)
        await limits.socket_opened(self)
        try:
            # Before any frame of this socket is read: the answer to its hello then implies
            # that notices reach it (the client's `synced`). Instant once the process listens.
            await registry.listening()
        except Exception:  # no channel layer now: serve the device; its next hello catches up
            log.exception("notice subscription failed; %s may miss notices", self.device_uid)
        ingest().submit("connect", self.device, socket=self, bounded=False)

    async def try_again_later(self, retry_after: float) -> None:
        """Overload is not an auth failure: accept, say when to come back, close with 1013."""
        counters.HANDSHAKES_DEFERRED.inc()
        await self.accept()
        await self.reply(
            "error",
            code="busy",
            message="the server is busy; reconnect later",
            retry_after=retry_after,
        )
        await self.close(code=TRY_AGAIN_LATER)

    async def disconnect(self, code: int) -> None:
        self.closed = True  # queued hellos of this socket are skipped: nobody reads the answer
        if self.device is not None:
            limits.socket_closed(self)
            registry.remove(self)
            ingest().submit("disconnect", self.device, socket=self, bounded=False)

    def check_frame(self, text_data: str | None, bytes_data: bytes | None) -> dict:
        """Every per-frame check, in one place: decode, schema, direction. Raises ProtocolError."""
        frame = text_data if text_data is not None else bytes_data or b""
        msg = protocol.decode(frame, max_bytes=settings.WALLE_MAX_FRAME_BYTES)
        if msg["type"] not in protocol.DEVICE_TO_SERVER:
            raise protocol.ProtocolError(
                "unexpected_type", f"a device may not send {msg['type']!r} messages"
            )
        return msg

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.device is None:
            # A deferred handshake (accepted only to say "busy" and close with 1013): what the
            # device sent before it read that belongs to no device. Dropped, not answered.
            return
        if await limits.throttled(self):
            return
        try:
            msg = self.check_frame(text_data, bytes_data)
        except protocol.ProtocolError as exc:
            counters.FRAMES_REJECTED.inc()
            await self.reply("error", code=exc.code, message=exc.message, ref=exc.ref)
            return
        mtype = msg["type"]
        if mtype == "ping":
            await self.reply("pong", t=msg.get("t", time.time()))
            return
        if mtype == "report":
            counters.REPORTS_RECEIVED.inc()
        elif mtype == "upload":
            counters.UPLOADS_RECEIVED.inc(len(msg["items"]))
        try:
            future = ingest().submit(mtype, self.device, msg, socket=self)
        except Busy as exc:
            counters.MESSAGES_DEFERRED.inc()
            await self.reply(
                "error",
                code="busy",
                message=str(exc),
                ref=msg.get("id"),
                retry_after=exc.retry_after,
            )
            return
        # Answer after the batch commits; meanwhile this socket's next frames queue up behind.
        future.add_done_callback(self._committed)

    def _committed(self, future: asyncio.Future) -> None:
        task = asyncio.ensure_future(self._send_answer(future.result()))
        _answering.add(task)  # the loop keeps tasks only weakly
        task.add_done_callback(_answering.discard)

    async def _send_answer(self, item: Item) -> None:
        try:
            await self.send(text_data=protocol.encode(_answer(item)))
        except Exception:  # the socket went away meanwhile: the device sends it again
            log.debug("answer to %s not sent", self.device_uid, exc_info=True)

    async def reply(self, mtype: str, **fields) -> None:
        await self.send(text_data=protocol.encode(protocol.message(mtype, **fields)))
