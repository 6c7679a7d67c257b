"""Console websockets: session-authenticated, origin-checked, under ws/console/."""

from channels.auth import AuthMiddlewareStack
from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import path

from console.consumers import AppReleasesConsumer, ReleaseConsumer

websocket_urlpatterns: list = [
    path(
        "ws/console/releases/<int:release_id>/",
        # A browser sends its cookies to any site's socket, so check the Origin (CSRF for sockets).
        AllowedHostsOriginValidator(AuthMiddlewareStack(ReleaseConsumer.as_asgi())),
    ),
    path(
        "ws/console/apps/<slug:slug>/releases/",
        AllowedHostsOriginValidator(AuthMiddlewareStack(AppReleasesConsumer.as_asgi())),
    ),
]
