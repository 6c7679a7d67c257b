"""Push, once per server process: the doorbell side of push-then-pull.

Each daphne process keeps its own registry of connected device sockets. A release notice is
published once on the channel layer to one group that has a single member per process (never
one member per device); each process encodes the frame once and writes it to the matching
local sockets. With Redis this is one PUBLISH per notice whatever the fleet size.

The same per-process subscription carries "release changed" messages: every process drops
what it cached about the app's releases (see `on_release_changed`), so a hello answered by any
process reflects the change. A notice implies a change, so it invalidates first, then rings.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Protocol

from channels.layers import get_channel_layer

from devices import counters
from devices.publish import group_send
from walle_device import protocol

log = logging.getLogger(__name__)
NOTICE_GROUP = "walle.notices"
# The longest the fan-out holds the event loop before it lets the loop take a turn. A turn
# then serves whatever is ready (the start call's response, the hellos of devices already
# notified) before the next sockets get theirs, so short turns spread the notices of one
# release over every turn in between (with 1,000-socket slices, 10 turns of hellos at 10k).
FAN_OUT_TURN_S = 0.25


@dataclass
class Notice:
    """What is published after commit: the doorbell frame and the devices it is for."""

    app: int
    task: str
    version: int
    digest: str
    device_uids: list[str]


class Socket(Protocol):
    device_uid: str

    async def send(
        self, text_data: str | None = None, bytes_data: bytes | None = None, close: bool = False
    ) -> None: ...


# Callbacks run in every server process when an app's releases changed (argument: app id).
_release_changed_hooks: list[Callable[[int], None]] = []


def on_release_changed(callback: Callable[[int], None]) -> None:
    """Run `callback(app_id)` in this process whenever any process says an app's releases changed."""
    if callback not in _release_changed_hooks:
        _release_changed_hooks.append(callback)


def release_changed_here(app_id: int) -> None:
    for callback in _release_changed_hooks:
        try:
            callback(app_id)
        except Exception:  # a cache that cannot be dropped must not stop the doorbell
            log.exception("release-changed hook %r failed", callback)


class Registry:
    """The device sockets connected to this process, by device uid."""

    def __init__(self) -> None:
        self.sockets: dict[str, Socket] = {}
        self.notices_sent = 0
        self._listener: asyncio.Task | None = None
        self._listener_loop: asyncio.AbstractEventLoop | None = None
        self._subscribed: asyncio.Future | None = None  # resolved once the group_add is done

    def add(self, socket: Socket) -> None:
        old = self.sockets.get(socket.device_uid)
        self.sockets[socket.device_uid] = socket
        if old is not None and old is not socket:
            log.info("device %s reconnected; the newer socket receives notices", socket.device_uid)

    def remove(self, socket: Socket) -> None:
        if self.sockets.get(socket.device_uid) is socket:
            del self.sockets[socket.device_uid]

    def ensure_listener(self) -> asyncio.Future:
        """Subscribe this process to the notice group once per event loop. The future resolves
        once the subscription is in place (see `listening`)."""
        loop = asyncio.get_running_loop()
        if self._listener is None or self._listener.done() or self._listener_loop is not loop:
            # Claim the slot synchronously: sockets connecting at the same moment must not each
            # subscribe (every notice would then be delivered once per subscription).
            self._listener_loop = loop
            subscribed = self._subscribed = loop.create_future()
            # Retrieved here, so a failure nobody awaits is not reported twice (the task logs it).
            subscribed.add_done_callback(lambda f: f.cancelled() or f.exception())
            self._listener = loop.create_task(self._subscribe_and_listen(subscribed))
        assert self._subscribed is not None
        return self._subscribed

    async def listening(self) -> None:
        """Return once this process is subscribed to notices: a notice published after that
        reaches every socket in the registry. The device consumer awaits it before it reads
        the device's hello, so a device whose hello was answered is registered for notices."""
        # shield: a socket that goes away meanwhile must not cancel the shared subscription.
        await asyncio.shield(self.ensure_listener())

    async def _subscribe_and_listen(self, subscribed: asyncio.Future) -> None:
        try:
            layer = get_channel_layer()
            channel = await layer.new_channel("walle-notices.")
            await layer.group_add(NOTICE_GROUP, channel)
        except BaseException as exc:
            if not subscribed.done():
                subscribed.set_exception(exc)
            raise
        subscribed.set_result(None)
        await self._listen(layer, channel)

    async def _listen(self, layer, channel: str) -> None:
        while True:
            try:
                message = await layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception:  # a broken layer connection: log, back off, keep serving devices
                log.exception("notice listener failed; retrying")
                await asyncio.sleep(1)
                continue
            kind = message.get("type")
            try:
                if kind in ("release.notice", "release.changed"):
                    release_changed_here(int(message["app"]))
                if kind == "release.notice":
                    await self.fan_out(message)
                elif kind == "device.revoked":
                    from devices.limits import close_devices

                    await close_devices(message["device_uids"])
            except Exception:  # one bad message must not stop the listener
                log.exception("notice %r could not be delivered", kind)

    async def fan_out(self, message: dict) -> int:
        """Write the notify frame, encoded once, to this process's sockets among `device_uids`.

        daphne's send writes the frame and returns without suspending (walle_web/serve.py), so
        a socket costs microseconds; the pass gives the loop a turn only after FAN_OUT_TURN_S.
        """
        frame = protocol.encode(
            protocol.message(
                "notify", task=message["task"], version=message["version"], digest=message["digest"]
            )
        )
        uids = message["device_uids"]
        sockets = self.sockets
        # Iterate over the smaller side: a notice for 10 devices in a process holding 10k.
        if len(uids) <= len(sockets):
            targets = [sockets[u] for u in uids if u in sockets]
        else:
            wanted = set(uids)
            targets = [s for u, s in list(sockets.items()) if u in wanted]
        sent = 0
        clock = time.monotonic
        started = clock()
        turn_ends = started + FAN_OUT_TURN_S
        for socket in targets:
            try:
                await socket.send(text_data=frame)
                sent += 1
            except Exception:  # one dead socket must not stop the others
                log.debug("notice to %s failed", socket.device_uid, exc_info=True)
            if clock() >= turn_ends:
                await asyncio.sleep(0)
                turn_ends = clock() + FAN_OUT_TURN_S
        self.notices_sent += sent
        if targets:
            counters.NOTICE_FANOUT_SECONDS.inc(clock() - started)
        return sent


registry = Registry()


def publish_notice(notice: Notice) -> None:
    """Publish one notice to every server process (called after commit, from any thread)."""
    group_send(NOTICE_GROUP, {"type": "release.notice", **asdict(notice)})


def publish_release_changed(app_id: int) -> None:
    """Tell every server process that an app's releases changed (called after commit)."""
    group_send(NOTICE_GROUP, {"type": "release.changed", "app": app_id})
