"""Alerts of an app: notification channels, task error-rate rules, recent alerts."""

from __future__ import annotations

from django.contrib import messages
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect

from accounts.choices import Role
from accounts.permissions import has_role
from alerts import services
from alerts.choices import AlertEvent, ChannelKind
from alerts.models import Alert, Channel, ErrorRateRule
from console.access import app_page, forbidden
from console.views.base import page
from tasks.models import Task


def _number(text: str, cast=float):
    try:
        value = cast(text)
    except (TypeError, ValueError, OverflowError):
        return None
    # Ids and counts past the columns' range are no valid input (and no 500 either).
    return value if isinstance(value, float) or abs(value) < 2**31 else None


def _post(request: HttpRequest, app) -> tuple[dict[str, str], str]:
    """Apply one form of the page; returns the errors and a secret to show once."""
    what = request.POST.get("what", "")
    if what == "channel":
        kind = request.POST.get("kind", "")
        try:
            channel, secret = services.save_channel(
                app,
                name=request.POST.get("name", ""),
                kind=kind,
                url=request.POST.get("url", "").strip(),
                emails=request.POST.get("emails", "").replace(",", " ").split(),
                events=request.POST.getlist("events"),
                by=request.user,
            )
        except services.AlertConfigError as exc:
            return exc.errors, ""
        messages.success(request, f"Channel “{channel.name}” saved.")
        return {}, secret
    if what in ("test", "delete"):
        channel = get_object_or_404(Channel, app=app, pk=_number(request.POST.get("channel"), int))
        if what == "delete":
            services.delete_channel(channel, by=request.user)
            messages.success(request, f"Channel “{channel.name}” deleted.")
        else:
            with transaction.atomic():
                services.raise_alert(
                    app,
                    AlertEvent.TEST,
                    f"Test alert for channel {channel.name}",
                    f"{request.user.get_username()} sent this to check the channel.",
                    channel=channel,
                    link=f"/apps/{app.slug}/alerts/",
                )
            messages.success(
                request, f"Test alert queued for “{channel.name}”; its delivery shows below."
            )
        return {}, ""
    if what == "rule":
        task = Task.objects.filter(app=app, pk=_number(request.POST.get("task"), int)).first()
        percent = _number(request.POST.get("threshold"))
        minutes = _number(request.POST.get("window_min"))
        if task is None:
            return {"task": "Pick a task of this app."}, ""
        try:
            rule = services.save_rule(
                app,
                task=task,
                threshold=percent / 100 if percent is not None else None,
                window_s=int(minutes * 60) if minutes is not None else None,
                min_runs=_number(request.POST.get("min_runs"), int),
                by=request.user,
            )
        except services.AlertConfigError as exc:
            return exc.errors, ""
        messages.success(request, f"Error-rate alert for {rule.task.name} saved.")
        return {}, ""
    if what == "delete-rule":
        rule = get_object_or_404(ErrorRateRule, app=app, pk=_number(request.POST.get("rule"), int))
        services.delete_rule(rule, by=request.user)
        messages.success(request, f"Error-rate alert for {rule.task.name} deleted.")
        return {}, ""
    return {"form": "Unknown form; reload the page."}, ""


@app_page()
def alerts_page(request: HttpRequest, app) -> HttpResponse:
    errors: dict[str, str] = {}
    secret = ""
    if request.method == "POST":
        if not has_role(request.user, app, Role.OPERATOR):
            return forbidden(request, "Configuring alerts needs the operator role.")
        errors, secret = _post(request, app)
        if not errors and not secret:
            return redirect("console:alerts", slug=app.slug)
    return page(
        request,
        "console/alerts.html",
        {
            "channels": Channel.objects.filter(app=app),
            "rules": ErrorRateRule.objects.filter(app=app).select_related("task"),
            "alerts": Alert.objects.filter(app=app).prefetch_related("deliveries__channel")[:30],
            "tasks": Task.objects.filter(app=app).order_by("name"),
            "events": AlertEvent.choices,
            "kinds": ChannelKind.choices,
            "errors": errors,
            "secret": secret,
            "form": request.POST if errors else {},
            "nav": "alerts",
        },
        status=400 if errors else 200,
    )
