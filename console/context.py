"""Template context for every console page: the app switcher and the user's role.

Registered as a context processor (settings.TEMPLATES), so views and access checks render
without importing it: console.access stays below the views."""

from __future__ import annotations

from django.http import HttpRequest

from console.access import apps_for, role_flags


def console(request: HttpRequest) -> dict:
    app = getattr(request, "console_app", None)
    user = request.user
    if not getattr(user, "is_authenticated", False):
        return {}
    data = {"console_apps": list(apps_for(user)), "current_app": app}
    if app is not None:
        data["current_role"] = getattr(request, "console_role", None)
        data.update(role_flags(user, app))
    return data
