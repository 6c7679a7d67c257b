"""Role checks for API views: the same rule as pages and the console websocket."""

from __future__ import annotations

from rest_framework.exceptions import PermissionDenied

from accounts.models import App
from accounts.permissions import has_role


def require_role(user, app: App, role: str) -> None:
    if not has_role(user, app, role):
        raise PermissionDenied(f"this needs the {role} role in app {app.slug!r}")
