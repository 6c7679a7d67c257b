"""The device websocket: authenticate, then one service call per incoming message."""

from __future__ import annotations

import logging
import time

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from devices import limits, services
from devices.push import registry
from releases.services import ReleaseError, record_report
from walle_device import protocol
from walle_web.metrics import COUNTERS

log = logging.getLogger(__name__)


def _header(scope: dict, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return ""


class DeviceConsumer(AsyncWebsocketConsumer):
    # No channel-layer channel per socket: notices reach sockets through the process registry
    # (devices/push.py). A channel per socket made every receive walk all channels of the
    # in-process layer (O(N^2) at 10k sockets) and would be one Redis subscription each.
    channel_layer_alias = None
    device_uid = ""

    async def connect(self) -> None:
        auth = _header(self.scope, b"authorization")
        scheme, _, token = auth.partition(" ")
        device = None
        if scheme.lower() == "bearer":
            device = await database_sync_to_async(services.authenticate_device)(token.strip())
        if device is None:
            # Refusing before accept answers the handshake with 403; the device re-enrolls.
            await self.close(code=4401)
            return
        self.device = device
        self.device_uid = device.uid
        await self.accept()
        registry.add(self)
        await limits.socket_opened(self)
        await registry.ensure_listener()
        await database_sync_to_async(services.set_presence)(device, True)

    async def disconnect(self, code: int) -> None:
        if self.device_uid:
            limits.socket_closed(self)
            registry.remove(self)
            if registry.sockets.get(self.device_uid) is None:
                await database_sync_to_async(services.set_presence)(self.device, False)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        frame = text_data if text_data is not None else bytes_data or b""
        if await limits.throttled(self):
            return
        try:
            msg = protocol.decode(frame, max_bytes=settings.WALLE_MAX_FRAME_BYTES)
            if msg["type"] not in protocol.DEVICE_TO_SERVER:
                raise protocol.ProtocolError(
                    "unexpected_type", f"a device may not send {msg['type']!r} messages"
                )
        except protocol.ProtocolError as exc:
            COUNTERS["frames_rejected"] += 1
            await self.reply("error", code=exc.code, message=exc.message, ref=exc.ref)
            return
        handler = getattr(self, f"on_{msg['type']}")
        try:
            await handler(msg)
        except (ReleaseError, ValueError) as exc:
            await self.reply("error", code="rejected", message=str(exc), ref=msg.get("id"))

    async def reply(self, mtype: str, **fields) -> None:
        await self.send(text_data=protocol.encode(protocol.message(mtype, **fields)))

    async def on_hello(self, msg: dict) -> None:
        tasks = await database_sync_to_async(services.device_hello)(
            self.device, msg["attrs"], msg["current"]
        )
        await self.reply("desired", tasks=tasks, server_time=time.time(), ref=msg.get("id"))

    async def on_report(self, msg: dict) -> None:
        COUNTERS["reports_received"] += 1
        await database_sync_to_async(record_report)(
            self.device,
            msg["deployment"],
            msg["state"],
            error_code=msg.get("error_code") or "",
            error=msg.get("error") or "",
        )
        await self.reply("ack", ref=msg["id"])

    async def on_run_stats(self, msg: dict) -> None:
        await database_sync_to_async(services.record_run_stats)(self.device, msg)
        await self.reply("ack", ref=msg["id"])

    async def on_upload(self, msg: dict) -> None:
        COUNTERS["uploads_received"] += len(msg["items"])
        keys = await database_sync_to_async(services.store_results)(self.device, msg["items"])
        await self.reply("upload_ack", keys=keys, ref=msg["id"])

    async def on_ping(self, msg: dict) -> None:
        await self.reply("pong", t=msg.get("t", time.time()))
