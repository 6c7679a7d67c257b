"""`POST /api/v1/devices/enroll/` on the event loop, through the ingest writer.

A fleet that enrolls at once (a new app version rolled out to millions of phones) must not
cost a Django thread and a transaction per device: this handler validates the request on the
loop with the API's own serializer and queues it for the ingest writer, which inserts a batch
of devices in one transaction (`devices.services.enroll_devices`). The answer is the same as
the REST view's (`devices.api.views.EnrollView`, which documents it in the OpenAPI schema and
serves the same request through Django); a full queue answers 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from django.http import HttpRequest

from devices.api.serializers import EnrollSerializer
from devices.ingest import Busy, ingest
from devices.services import EnrollmentError
from tasks.signing import public_key_b64
from walle_device import protocol
from walle_web.rest import EnrollAddressThrottle, EnrollKeyThrottle

PATH = "/api/v1/devices/enroll/"
MAX_BODY = 64 * 1024


def enrolled_body(device, token: str) -> dict:
    """What an enrolled device receives, once (its token is never shown again)."""
    return {
        "device_id": device.uid,
        "token": token,
        "app": device.app.slug,
        "release_key": public_key_b64(),
    }


async def _read_body(receive: Callable) -> bytes | None:
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body += message.get("body", b"")
        if len(body) > MAX_BODY:
            return None
        if not message.get("more_body"):
            return bytes(body)


async def _json(send: Callable, status: int, payload: dict, headers: list | None = None) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def enroll_app(scope: dict, receive: Callable, send: Callable) -> None:
    body = await _read_body(receive)
    if body is None:
        await _json(send, 413, {"detail": f"send a JSON body of at most {MAX_BODY} bytes"})
        return
    try:
        data = protocol.loads_strict(body or b"{}")
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        await _json(send, 400, {"detail": f"the body is not valid JSON: {exc}"})
        return
    # The throttles' counters may live in Redis: a blocking call, so off the event loop.
    wait = await asyncio.to_thread(_throttle_wait, scope, data if isinstance(data, dict) else {})
    if wait is not None:
        retry = b"%d" % max(1, round(wait))
        await _json(
            send,
            429,
            {"detail": f"too many enrollments; try again in {max(1, round(wait))} s"},
            [(b"retry-after", retry)],
        )
        return
    serializer = EnrollSerializer(data=data if isinstance(data, dict) else {})
    if not serializer.is_valid():
        await _json(send, 400, serializer.errors)
        return
    try:
        item = await ingest().submit("enroll", None, serializer.validated_data)
    except Busy as exc:
        retry = b"%d" % max(1, round(exc.retry_after))
        await _json(send, 503, {"detail": str(exc)}, [(b"retry-after", retry)])
        return
    if isinstance(item.error, protocol.ProtocolError):
        await _json(send, 400, {"attrs": [item.error.message]})
    elif isinstance(item.error, EnrollmentError):
        await _json(send, 403, {"enrollment_key": [str(item.error)]})
    elif isinstance(item.error, Busy):
        retry = b"%d" % max(1, round(item.error.retry_after))
        await _json(send, 503, {"detail": str(item.error)}, [(b"retry-after", retry)])
    elif item.error is not None:
        raise item.error
    else:
        device, token = item.result
        await _json(send, 201, enrolled_body(device, token))


def _throttle_wait(scope: dict, data: dict) -> float | None:
    """Seconds to wait when this address or this enrollment key is over its rate (the REST
    view's own throttles, on a request-shaped stand-in), else None."""
    meta = {"REMOTE_ADDR": (scope.get("client") or ("", 0))[0] or ""}
    for key, value in scope.get("headers", []):
        if key.lower() == b"x-forwarded-for":
            meta["HTTP_X_FORWARDED_FOR"] = value.decode("latin-1")
    request = HttpRequest()
    request.META = meta
    request.data = data  # what DRF's Request offers the key throttle
    waits = []
    for throttle in (EnrollAddressThrottle(), EnrollKeyThrottle()):
        if not throttle.allow_request(request, None):
            waits.append(throttle.wait() or 1.0)
    return max(waits) if waits else None


def handles(scope: dict) -> bool:
    return scope["type"] == "http" and scope["path"] == PATH and scope["method"] == "POST"
