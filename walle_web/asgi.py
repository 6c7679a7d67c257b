"""ASGI entry point: content downloads and device enrollment on the event loop (they are
most of a fleet's HTTP requests), other HTTP through Django, websockets through Channels."""

import asyncio
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "walle_web.settings")
django_asgi_app = get_asgi_application()

from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

# The embedded default serves the console's CSS/JS itself, DEBUG or not; behind a CDN, run
# collectstatic and serve STATIC_ROOT from there instead.
django_asgi_app = ASGIStaticFilesHandler(django_asgi_app)

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from console.routing import websocket_urlpatterns as console_ws  # noqa: E402
from devices import enroll, publish  # noqa: E402
from devices.push import registry  # noqa: E402
from devices.routing import websocket_urlpatterns as device_ws  # noqa: E402
from tasks.content import ContentHandler  # noqa: E402

publish.IN_SERVER = True

router = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # Devices authenticate with their token header, not cookies, so no origin check for them;
        # the console socket authenticates with the session (see console/routing.py).
        "websocket": URLRouter(device_ws + console_ws),
    }
)
content = ContentHandler(fallback=django_asgi_app)


async def application(scope, receive, send):
    if scope["type"] in ("http", "websocket"):
        serving(asyncio.get_running_loop())
    if content.handles(scope):
        await content(scope, receive, send)
        return
    if enroll.handles(scope):
        await enroll.enroll_app(scope, receive, send)
        return
    if scope["type"] == "http":
        await _answer_then_publish(scope, receive, send)
        return
    await router(scope, receive, send)


def serving(loop: asyncio.AbstractEventLoop) -> None:
    """This process serves sockets on `loop` (called at server start-up, and by the first
    request where nothing called it): publishes from threads go to the loop without waiting,
    and the process subscribes to notices and release changes."""
    if publish.server_loop() is not loop:
        publish.bind_server_loop(loop)
        registry.ensure_listener()


async def _answer_then_publish(scope, receive, send):
    """A Django request whose publishes (a release start's notices) go out only once its
    response is sent: the caller is not kept waiting behind a fan-out to every socket of
    this process (devices.publish.HeldPublishes)."""
    held = publish.HeldPublishes()
    token = publish.HELD.set(held)  # copied into the request's thread by asgiref

    async def sending(message):
        await send(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            held.release()

    try:
        await router(scope, receive, sending)
    finally:
        publish.HELD.reset(token)
        held.release()  # a request that failed before its response still publishes
