"""ASGI entry point: HTTP through Django, websockets through Channels."""

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
from devices.routing import websocket_urlpatterns as device_ws  # noqa: E402
from walle_web import relay  # noqa: E402

relay.IN_SERVER = True

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # Devices authenticate with their token header, not cookies, so no origin check for them;
        # the console socket authenticates with the session (see console/routing.py).
        "websocket": URLRouter(device_ws + console_ws),
    }
)
