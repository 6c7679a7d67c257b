"""Who may see which console page: every decision goes through accounts.permissions."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse

from accounts.choices import Role
from accounts.models import App
from accounts.permissions import has_role, role_in, visible_apps


def login_url() -> str:
    return reverse("console:login")


def console_login_required(view: Callable) -> Callable:
    """Like Django's login_required, but to the console's own login page."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path(), login_url())
        return view(request, *args, **kwargs)

    return wrapper


def app_page(role: str = Role.VIEWER) -> Callable:
    """A page inside one app (`/apps/<slug>/…`): logged in, and at least `role` in that app.

    The view gets the App as its second argument; `request.console_role` holds the user's role.
    """

    def decorate(view: Callable) -> Callable:
        @wraps(view)
        @console_login_required
        def wrapper(request: HttpRequest, slug: str, *args, **kwargs) -> HttpResponse:
            app = get_object_or_404(App, slug=slug)
            current = role_in(request.user, app)
            if current is None:
                return forbidden(
                    request,
                    f"You are not a member of the app “{app.slug}”. Ask one of its admins to add "
                    "you, or pick another app from the switcher.",
                )
            if not has_role(request.user, app, role):
                request.console_app = app
                request.console_role = current
                return forbidden(
                    request,
                    f"This needs the {role} role in “{app.slug}”; you are a {current}. "
                    "Ask an admin of the app for more access.",
                )
            request.console_app = app
            request.console_role = current
            return view(request, app, *args, **kwargs)

        return wrapper

    return decorate


def forbidden(request: HttpRequest, reason: str) -> HttpResponse:
    """The console's 403 page: what is not allowed and whom to ask."""
    return render(request, "console/403.html", {"reason": reason}, status=403)


def role_flags(user, app: App) -> dict[str, bool]:
    return {
        "can_operate": has_role(user, app, Role.OPERATOR),
        "can_admin": has_role(user, app, Role.ADMIN),
    }


def apps_for(user):
    return visible_apps(user).order_by("slug")
