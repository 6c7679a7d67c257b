"""Publishing to the channel layer after commit, from any thread of any process.

A publish is a release notice, an app's releases changing, a device revoked, a dashboard
update. With Redis every process publishes to the pub/sub layer and every server process
hears it. The embedded default uses the in-process layer, which only reaches the sockets of
the process that publishes; there the one process that serves sockets also runs the rollout
loop (walle_web/serve.py), so everything that must reach a device is published where the
device is connected. A process with no sockets (a management command, a shell) publishes to
nobody in the embedded configuration, so it rings no device (`reaches_sockets`): what it
starts or advances leaves the devices pending, and the server's rollout loop rings them on
its next pass (docs/architecture.md, "The rollout loop and publishing").

In a server process a publish is handed to the event loop and never waited for; requests and
ingest batches hold theirs until their own answer is out (`HeldPublishes`).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer

log = logging.getLogger(__name__)
# Set by walle_web.asgi: this process serves sockets and can deliver in-process messages.
IN_SERVER = False

_server_loop: asyncio.AbstractEventLoop | None = None


class HeldPublishes:
    """Publishes made while a request or an ingest batch is being answered, sent after it.

    A release start rings every online device from its commit hook; published at once, the
    fan-out to 10,000 sockets runs on the event loop ahead of the start call's own response
    (measured: 6-25 s for the call at 10k). Held, the caller gets its answer first and the
    devices their notice right after: nothing is dropped, only ordered behind the answer.
    """

    __slots__ = ("messages", "released")

    def __init__(self) -> None:
        self.messages: list[tuple[str, dict]] = []
        self.released = False

    def add(self, group: str, message: dict) -> None:
        self.messages.append((group, message))

    def release(self) -> None:
        """Publish what was held, in order; later publishes go out at once. Idempotent."""
        self.released = True
        messages, self.messages = self.messages, []
        for group, message in messages:
            _publish(group, message)


# The holder of the request or ingest batch being answered in this context, if any.
HELD: contextvars.ContextVar[HeldPublishes | None] = contextvars.ContextVar(
    "walle_held_publishes", default=None
)


def bind_server_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Remember the server's event loop (walle_web.asgi does, at start-up or first call)."""
    global _server_loop
    _server_loop = loop


def server_loop() -> asyncio.AbstractEventLoop | None:
    """The running server event loop of this process, if there is one."""
    loop = _server_loop
    if loop is None or loop.is_closed() or not loop.is_running():
        return None
    return loop


def reaches_sockets() -> bool:
    """Does a publish from this process reach the devices' sockets? With a shared layer
    (Redis), from every process; with the in-process layer, only from the server process."""
    return IN_SERVER or not isinstance(get_channel_layer(), InMemoryChannelLayer)


def _log_failure(future) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("channel-layer publish failed: %s", future.exception())


def group_send(group: str, message: dict, *, skip_if_empty: bool = False) -> None:
    """Publish one message to a channel-layer group, from any thread.

    `skip_if_empty`: in the server process of the embedded configuration, where the group's
    members are visible, skip the publish when nobody listens (a release dashboard nobody
    has open). In a server process the publish is handed to the event loop and never
    waited for; elsewhere it is sent before returning.
    """
    layer = get_channel_layer()
    if (
        skip_if_empty
        and IN_SERVER
        and isinstance(layer, InMemoryChannelLayer)
        and not layer.groups.get(group)
    ):
        return
    held = HELD.get()
    if held is not None and not held.released and server_loop() is not None:
        held.add(group, message)
        return
    _publish(group, message)


def _publish(group: str, message: dict) -> None:
    layer = get_channel_layer()
    loop = server_loop()
    if loop is not None:
        # In a server process: hand the publish to the event loop and return. The callers are
        # the ingest writer, the rollout loop and request threads after commit; none must
        # wait for a loop that is busy with thousands of sockets.
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            loop.create_task(layer.group_send(group, message)).add_done_callback(_log_failure)
        else:
            asyncio.run_coroutine_threadsafe(
                layer.group_send(group, message), loop
            ).add_done_callback(_log_failure)
        return
    if isinstance(layer, InMemoryChannelLayer) and not IN_SERVER:
        # The embedded configuration, in a process that serves no sockets: nobody here
        # listens, and the devices converge without this message (see the module docstring).
        log.debug("no server in this process: %s to %s reaches no socket", message["type"], group)
    async_to_sync(layer.group_send)(group, message)
