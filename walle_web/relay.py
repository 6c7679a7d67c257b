"""Channel-layer messages from processes that hold no sockets, in the embedded configuration.

With Redis every process publishes straight to the pub/sub layer. The embedded default uses
the in-process layer, which only the server process can deliver from; the rollout worker
(`manage.py rolloutd`) is another process, so there its messages go to the server over HTTP,
signed with the relay key, and the server publishes them on its own layer.

The relay key is WALLE_RELAY_KEY, or derived from WALLE_SECRET_KEY; never from the public
development key (with it and no WALLE_RELAY_KEY the relay refuses everything). A message is
accepted only when its signature verifies, it is recent, and it is one of the few shapes the
server publishes itself (RELAY_SHAPES): a forged or malformed message never reaches a listener.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import hmac
import json
import logging
import re
import time
from typing import Any

import httpx
from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.crypto import salted_hmac
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from walle_device import protocol

log = logging.getLogger(__name__)
# Set by walle_web.asgi: this process serves sockets and can deliver in-process messages.
IN_SERVER = False
# A relayed message older (or newer) than this is refused: a captured body cannot be replayed
# later.
MAX_SKEW_S = 300

_UIDS = (list, True, protocol.Bound(max_len=1_000_000))
# message type -> (group pattern, fields as in walle_device.protocol)
RELAY_SHAPES: dict[str, tuple[re.Pattern, dict[str, tuple]]] = {
    "release.notice": (
        re.compile(r"^walle\.notices$"),
        {
            "app": (int, True, protocol.ROW_ID),
            "task": (str, True, protocol.TASK_NAME),
            "version": (int, True, protocol.VERSION),
            "digest": (str, True, protocol.DIGEST),
            "device_uids": _UIDS,
        },
    ),
    "release.changed": (re.compile(r"^walle\.notices$"), {"app": (int, True, protocol.ROW_ID)}),
    "device.revoked": (re.compile(r"^walle\.notices$"), {"device_uids": _UIDS}),
    "release.update": (
        re.compile(r"^console\.(release|app)\.\d{1,19}$"),
        {"release": (int, True, protocol.ROW_ID), "kind": (str, True, protocol.Bound(max_len=32))},
    ),
}

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
    """Remember the server's event loop (walle_web.asgi does, on its first call)."""
    global _server_loop
    _server_loop = loop


def server_loop() -> asyncio.AbstractEventLoop | None:
    """The running server event loop of this process, if there is one."""
    loop = _server_loop
    if loop is None or loop.is_closed() or not loop.is_running():
        return None
    return loop


def _log_failure(future) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("channel-layer publish failed: %s", future.exception())


def relay_key() -> bytes | None:
    """The key that signs relayed messages, or None when only a public one could be derived."""
    if settings.WALLE_RELAY_KEY:
        return settings.WALLE_RELAY_KEY.encode()
    if settings.SECRET_KEY == getattr(settings, "DEV_SECRET_KEY", None):
        return None
    return salted_hmac("walle.relay", "relay-key", secret=settings.SECRET_KEY).digest()


def _signature(key: bytes, body: bytes) -> str:
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def check_message(payload: Any) -> tuple[str, dict]:
    """The (group, message) of a relay body; raises ValueError saying what is wrong."""
    if not isinstance(payload, dict) or set(payload) != {"group", "message", "sent_at"}:
        raise ValueError("a relay body is an object with group, message and sent_at")
    group, message, sent_at = payload["group"], payload["message"], payload["sent_at"]
    if not isinstance(sent_at, int | float) or abs(time.time() - sent_at) > MAX_SKEW_S:
        raise ValueError(f"sent_at must be within {MAX_SKEW_S} s of the server's clock")
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ValueError("message must be an object with a string type")
    shape = RELAY_SHAPES.get(message["type"])
    if shape is None:
        raise ValueError(f"message type {message['type'][:40]!r} is not relayed")
    pattern, fields = shape
    if not isinstance(group, str) or not pattern.match(group):
        raise ValueError(f"group {str(group)[:60]!r} does not take {message['type']} messages")
    if set(message) - {"type", *fields}:
        raise ValueError("message has fields its type does not define")
    spec = {name: ((t,), req, *rest) for name, (t, req, *rest) in fields.items()}
    protocol.check_fields(message["type"], message, spec)
    for uid in message.get("device_uids", ()):
        if not isinstance(uid, str) or len(uid) > 40:
            raise ValueError("device_uids must be device ids (strings)")
    return group, message


def group_send(group: str, message: dict, *, skip_if_empty: bool = False) -> None:
    """Publish one message to a channel-layer group, from any process.

    `skip_if_empty`: in the server process of the embedded configuration, where the group's
    members are visible, skip the publish when nobody listens (a release dashboard nobody
    has open). In a server process the publish is handed to the event loop and never
    waited for; elsewhere (the rollout worker, a shell) it is sent before returning.
    """
    layer = get_channel_layer()
    if (
        skip_if_empty
        and IN_SERVER
        and isinstance(layer, InMemoryChannelLayer)
        and not layer.groups.get(group)
    ):
        return
    if isinstance(layer, InMemoryChannelLayer) and not IN_SERVER and settings.WALLE_RELAY_URL:
        key = relay_key()
        if key is None:
            log.error(
                "cannot relay to %s: set WALLE_RELAY_KEY (or WALLE_SECRET_KEY) in both processes",
                settings.WALLE_RELAY_URL,
            )
            return
        body = json.dumps({"group": group, "message": message, "sent_at": time.time()}).encode()
        try:
            httpx.post(
                settings.WALLE_RELAY_URL.rstrip("/") + "/internal/relay",
                content=body,
                headers={
                    "X-Walle-Signature": _signature(key, body),
                    "Content-Type": "application/json",
                },
                timeout=10,
            )
        except httpx.HTTPError as exc:
            # Devices still converge: they ask for their desired state on every reconnect.
            log.warning("relay to %s failed: %s", settings.WALLE_RELAY_URL, exc)
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
        # the ingest writer and request threads after commit; neither must wait for a loop
        # that is busy with thousands of sockets.
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
    async_to_sync(layer.group_send)(group, message)


def _refuse(status: int, detail: str) -> JsonResponse:
    return JsonResponse({"detail": detail}, status=status)


@csrf_exempt
@require_POST
def relay(request: HttpRequest) -> HttpResponse:
    key = relay_key()
    if key is None:
        return _refuse(403, "the relay is off: set WALLE_RELAY_KEY (or WALLE_SECRET_KEY)")
    body = request.body  # at most DATA_UPLOAD_MAX_MEMORY_SIZE, else a 400
    if not hmac.compare_digest(request.headers.get("X-Walle-Signature", ""), _signature(key, body)):
        return _refuse(403, "bad signature")
    try:
        group, message = check_message(protocol.loads_strict(body))
    except (ValueError, UnicodeDecodeError) as exc:
        return _refuse(400, str(exc))
    group_send(group, message)
    return JsonResponse({"ok": True})
