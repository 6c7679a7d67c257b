"""App-level pages: overview, audit log, and (for admins) members and enrollment keys."""

from __future__ import annotations

import re

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.http import require_POST

from accounts import services as accounts
from accounts.choices import Role
from accounts.models import App, AuditEntry, EnrollmentKey
from console.access import app_page, console_login_required, forbidden
from console.queries import counts_for_releases, keyset_page
from console.views.base import page
from devices.models import Device
from releases.choices import ROLLING_OUT_STATES
from releases.models import Release
from tasks.models import Task

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


@app_page()
def overview(request: HttpRequest, app) -> HttpResponse:
    active = list(
        Release.objects.filter(app=app, state__in=ROLLING_OUT_STATES)
        .select_related("task", "version")
        .order_by("-id")[:10]
    )
    counts = counts_for_releases([r.pk for r in active])
    for r in active:
        r.state_counts = counts[r.pk]
    fleet = Device.objects.filter(app=app).aggregate(
        total=Count("id"), online=Count("id", filter=Q(online=True))
    )
    return page(
        request,
        "console/overview.html",
        {
            "active": active,
            "fleet": fleet,
            "n_tasks": Task.objects.filter(app=app).count(),
            "recent": AuditEntry.objects.filter(app=app).select_related("user")[:8],
            "nav": "overview",
        },
    )


@app_page()
def audit_log(request: HttpRequest, app) -> HttpResponse:
    qs = AuditEntry.objects.filter(app=app).select_related("user")
    action = request.GET.get("action", "").strip()
    if action:
        qs = qs.filter(action__startswith=action)
    user = request.GET.get("user", "").strip()
    if user:
        qs = qs.filter(user__username=user)
    result = keyset_page(qs, request.GET.get("after"), request.GET.get("before"), desc=True)
    return page(
        request,
        "console/audit.html",
        {"page": result, "action": action, "user_filter": user, "nav": "audit"},
    )


@app_page(Role.ADMIN)
def settings_page(request: HttpRequest, app) -> HttpResponse:
    new_key = None
    if request.method == "POST":
        what = request.POST.get("what")
        if what == "member":
            username = request.POST.get("username", "").strip()
            role = request.POST.get("role", "")
            user = get_user_model().objects.filter(username=username).first()
            if user is None:
                messages.error(request, f"No user called “{username}”. Check the spelling.")
            elif role not in Role.values:
                messages.error(request, "Pick a role: viewer, operator or admin.")
            else:
                accounts.set_member(app, user, role, by=request.user)
                messages.success(request, f"{user.username} is now {role} of {app.slug}.")
            return redirect("console:settings", slug=app.slug)
        if what == "remove":
            user = (
                get_user_model().objects.filter(username=request.POST.get("username", "")).first()
            )
            if user is not None:
                try:
                    accounts.remove_member(app, user, by=request.user)
                    messages.success(
                        request, f"{user.username} no longer has a role in {app.slug}."
                    )
                except accounts.MembershipError as exc:
                    messages.error(request, str(exc))
            return redirect("console:settings", slug=app.slug)
        if what == "key":
            label = request.POST.get("label", "").strip()[:100] or "default"
            _, new_key = accounts.create_enrollment_key(app, label=label, by=request.user)
            messages.success(request, "Enrollment key created. Copy it now: it is shown only once.")
    members = app.memberships.select_related("user").order_by("user__username")
    keys = EnrollmentKey.objects.filter(app=app).order_by("-created_at")
    return page(
        request,
        "console/settings.html",
        {"members": members, "keys": keys, "new_key": new_key, "roles": Role, "nav": "settings"},
    )


@require_POST
@app_page(Role.ADMIN)
def revoke_key(request: HttpRequest, app, key_id: int) -> HttpResponse:
    key = get_object_or_404(EnrollmentKey, app=app, pk=key_id)
    accounts.revoke_enrollment_key(key, by=request.user)
    messages.success(request, f"Key {key.prefix}… revoked; devices can no longer enroll with it.")
    return redirect("console:settings", slug=app.slug)


@console_login_required
def app_create(request: HttpRequest) -> HttpResponse:
    """Staff create apps (tenants); the creator becomes the new app's admin."""
    if not request.user.is_staff:
        return forbidden(request, "Only staff accounts create apps; ask a platform administrator.")
    errors: dict[str, str] = {}
    form = {"slug": "", "name": ""}
    if request.method == "POST":
        form = {k: request.POST.get(k, "").strip() for k in form}
        if not SLUG.match(form["slug"]):
            errors["slug"] = "Use lowercase letters, digits and '-' (e.g. shop-android)."
        elif App.objects.filter(slug=form["slug"]).exists():
            errors["slug"] = f"An app called “{form['slug']}” already exists."
        if not errors:
            app = accounts.create_app(slug=form["slug"], name=form["name"], owner=request.user)
            messages.success(
                request, f"App {app.slug} created. Create an enrollment key so devices can join."
            )
            return redirect("console:settings", slug=app.slug)
    return page(
        request,
        "console/app_new.html",
        {"form": form, "errors": errors},
        status=400 if errors else 200,
    )
