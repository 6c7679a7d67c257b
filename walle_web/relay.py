"""Channel-layer messages from processes that hold no sockets, in the embedded configuration.

With Redis every process publishes straight to the pub/sub layer. The embedded default uses
the in-process layer, which only the server process can deliver from; the rollout worker
(`manage.py rolloutd`) is another process, so there its messages go to the server over HTTP,
signed with the secret key, and the server publishes them on its own layer.
"""

from __future__ import annotations

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


def _signature(body: bytes) -> str:
    return hmac.new(settings.SECRET_KEY.encode(), body, hashlib.sha256).hexdigest()


def group_send(group: str, message: dict, *, skip_if_empty: bool = False) -> None:
    """Publish one message to a channel-layer group, from any process.

    `skip_if_empty`: in the server process of the embedded configuration, where the group's
    members are visible, skip the (blocking) hop to the event loop when nobody listens, as
    for a release dashboard nobody has open while thousands of devices report.
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
    async_to_sync(layer.group_send)(group, message)


@csrf_exempt
@require_POST
def relay(request: HttpRequest) -> HttpResponse:
    if not hmac.compare_digest(
        request.headers.get("X-Walle-Signature", ""), _signature(request.body)
    ):
        return HttpResponseForbidden("bad signature")
    payload = json.loads(request.body)
    async_to_sync(get_channel_layer().group_send)(payload["group"], payload["message"])
    return JsonResponse({"ok": True})
