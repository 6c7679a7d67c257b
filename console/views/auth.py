"""Log in, log out, the landing page and the personal API token."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse_lazy
from django.views.decorators.http import require_http_methods
from rest_framework.authtoken.models import Token

from accounts import services as accounts_services
from console.access import apps_for, console_login_required
from console.views.base import page


class LoginView(auth_views.LoginView):
    template_name = "console/login.html"
    redirect_authenticated_user = True
    next_page = reverse_lazy("console:home")


def locked_out(request: HttpRequest, response=None, credentials=None) -> HttpResponse:
    """django-axes' answer once a username has failed too often from one address: 429."""
    minutes = int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)
    form = AuthenticationForm(request, data=None)
    return page(
        request,
        "console/login.html",
        {
            "form": form,
            "locked": f"Too many failed logins for this username from your address. Wait {minutes} "
            "minutes and try again, or ask an administrator to reset it "
            "(manage.py axes_reset_username <name>).",
        },
        status=429,
    )


class LogoutView(auth_views.LogoutView):
    next_page = reverse_lazy("console:login")


@console_login_required
def home(request: HttpRequest) -> HttpResponse:
    """Straight to the first app the user belongs to; an empty state when there is none."""
    apps = apps_for(request.user)
    # The app switcher without JavaScript submits ?app=<slug> here.
    app = apps.filter(slug=request.GET.get("app", "")).first() or apps.first()
    if app is not None:
        return redirect("console:overview", slug=app.slug)
    return page(request, "console/no_apps.html")


@console_login_required
@require_http_methods(["GET", "POST"])
def tokens(request: HttpRequest) -> HttpResponse:
    """The user's personal API token: one per user, so creating one replaces the old one."""
    new_key = None
    if request.method == "POST":
        action = request.POST.get("action")
        if action == "create":
            new_key = accounts_services.rotate_token(request.user)
            messages.success(
                request, "New token created. Copy it now: it is shown only on this page."
            )
        else:
            accounts_services.revoke_token(request.user)
            messages.success(request, "Token revoked. Scripts that used it now get 401.")
    token = Token.objects.filter(user=request.user).first()
    return page(request, "console/tokens.html", {"token": token, "new_key": new_key})
