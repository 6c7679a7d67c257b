"""Channel-layer messages from processes that hold no sockets, in the embedded configuration.

With Redis every process publishes straight to the pub/sub layer. The embedded default uses
the in-process layer, which only the server process can deliver from; the rollout worker
(`manage.py rolloutd`) is another process, so there its messages go to the server over HTTP,
signed with the secret key, and the server publishes them on its own layer.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging

import httpx
from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

log = logging.getLogger(__name__)
# Set by walle_web.asgi: this process serves sockets and can deliver in-process messages.
IN_SERVER = False
_server_loop: asyncio.AbstractEventLoop | None = None


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


def _signature(body: bytes) -> str:
    return hmac.new(settings.SECRET_KEY.encode(), body, hashlib.sha256).hexdigest()


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
        body = json.dumps({"group": group, "message": message}).encode()
        try:
            httpx.post(
                settings.WALLE_RELAY_URL.rstrip("/") + "/internal/relay",
                content=body,
                headers={"X-Walle-Signature": _signature(body), "Content-Type": "application/json"},
                timeout=10,
            )
        except httpx.HTTPError as exc:
            # Devices still converge: they ask for their desired state on every reconnect.
            log.warning("relay to %s failed: %s", settings.WALLE_RELAY_URL, exc)
        return
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


@csrf_exempt
@require_POST
def relay(request: HttpRequest) -> HttpResponse:
    if not hmac.compare_digest(
        request.headers.get("X-Walle-Signature", ""), _signature(request.body)
    ):
        return HttpResponseForbidden("bad signature")
    payload = json.loads(request.body)
    group_send(payload["group"], payload["message"])
    return JsonResponse({"ok": True})
