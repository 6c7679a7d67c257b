"""Alerts: channels and rules (configuration), raising an alert, and delivering the outbox.

An alert is written in the transaction that decided it (a release paused by its gate commits
with its alert, or neither does), with one `Delivery` row per channel that hears it: that is
the outbox. `deliver_due` sends what is due — any number of workers may run it, each claims a
delivery with a lease before sending — and records the answer; a failure is retried with
exponential backoff and full jitter until `MAX_ATTEMPTS`. A worker that dies between sending
and recording leaves the lease to expire, and the delivery goes again: delivery is at least
once, and receivers deduplicate on the `X-Walle-Delivery` header.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import random
import secrets
import socket
import time
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.mail import EmailMessage
from django.db import IntegrityError, transaction
from django.db.models import Q, Sum
from django.utils import timezone

from accounts.models import App
from accounts.services import audit
from alerts.choices import AlertEvent, ChannelKind, DeliveryState
from alerts.models import Alert, Channel, Delivery, ErrorRateRule
from devices.models import RunStat
from releases.models import Release
from tasks.models import Task

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 10
BACKOFF_BASE_S = 10.0  # first retry within 5-10 s, then doubling: ~2.8 h until the tenth
BACKOFF_CAP_S = 3600.0
LEASE_S = 60.0  # a claimed delivery is another worker's again after this long
SEND_TIMEOUT_S = 5.0
RULE_CHECK_EVERY_S = 15.0
MAX_EMAILS = 20


class AlertConfigError(ValueError):
    """A channel or rule that cannot be saved; `errors` maps a field to what to fix."""

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))


# --- configuration ----------------------------------------------------------------------


def new_secret() -> str:
    return f"whsec_{secrets.token_urlsafe(32)}"


def _validate_channel(kind: str, url: str, emails: list, events: list) -> dict[str, str]:
    errors: dict[str, str] = {}
    if kind not in ChannelKind.values:
        errors["kind"] = f"choose one of {', '.join(ChannelKind.values)}"
    if kind == ChannelKind.WEBHOOK:
        parts = urlsplit(url or "")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            errors["url"] = (
                "give the receiver's full http(s) URL, e.g. https://hooks.example.com/walle"
            )
        elif len(url) > 500:
            errors["url"] = "the URL is longer than 500 characters"
    if kind == ChannelKind.EMAIL:
        if not isinstance(emails, list) or not emails or len(emails) > MAX_EMAILS:
            errors["emails"] = f"give 1 to {MAX_EMAILS} email addresses"
        elif bad := [e for e in emails if not isinstance(e, str) or "@" not in e or len(e) > 254]:
            errors["emails"] = f"not email addresses: {', '.join(map(str, bad[:5]))}"
    if not isinstance(events, list) or (
        unknown := [e for e in events if e not in AlertEvent.values]
    ):
        errors["events"] = (
            f"unknown events {', '.join(map(str, unknown))}; " if isinstance(events, list) else ""
        ) + f"choose from {', '.join(AlertEvent.values)} (none = every event)"
    return errors


def save_channel(
    app: App,
    *,
    channel: Channel | None = None,
    name: str,
    kind: str,
    url: str = "",
    emails: list | None = None,
    events: list | None = None,
    enabled: bool = True,
    secret: str = "",
    by: AbstractBaseUser | None = None,
) -> tuple[Channel, str]:
    """Create or update a channel; returns it and its webhook secret when a new one was made
    (shown once), else ""."""
    emails = [e.strip() for e in (emails or []) if isinstance(e, str) and e.strip()]
    events = list(events or [])
    name = (name or "").strip()
    errors = _validate_channel(kind, url, emails, events)
    if not name or len(name) > 100:
        errors["name"] = "give the channel a name (up to 100 characters)"
    elif Channel.objects.filter(app=app, name=name).exclude(pk=getattr(channel, "pk", None)):
        errors["name"] = f"there is already a channel called {name!r} in this app"
    if secret and len(secret) < 16:
        errors["secret"] = "a webhook secret needs at least 16 characters (or leave it empty)"
    if errors:
        raise AlertConfigError(errors)
    shown = ""
    with transaction.atomic():
        created = channel is None
        if created:
            channel = Channel(
                app=app, created_by=by if getattr(by, "is_authenticated", False) else None
            )
        channel.name, channel.kind, channel.enabled, channel.events = name, kind, enabled, events
        channel.url = url if kind == ChannelKind.WEBHOOK else ""
        channel.emails = emails if kind == ChannelKind.EMAIL else []
        if kind == ChannelKind.WEBHOOK and (secret or not channel.secret):
            channel.secret = secret or new_secret()
            shown = channel.secret
        channel.save()
        audit(
            app,
            by,
            "alert_channel.create" if created else "alert_channel.update",
            "alert_channel",
            str(channel.pk),
            {"name": name, "kind": kind, "events": events},
        )
    return channel, shown


def delete_channel(channel: Channel, *, by: AbstractBaseUser | None = None) -> None:
    with transaction.atomic():
        audit(
            channel.app,
            by,
            "alert_channel.delete",
            "alert_channel",
            str(channel.pk),
            {"name": channel.name},
        )
        channel.delete()


def save_rule(
    app: App,
    *,
    task: Task,
    threshold: float,
    window_s: int = 600,
    min_runs: int = 20,
    by: AbstractBaseUser | None = None,
) -> ErrorRateRule:
    errors: dict[str, str] = {}
    if task.app_id != app.pk:
        errors["task"] = f"task {task.name!r} is not a task of app {app.slug!r}"
    if (
        not isinstance(threshold, int | float)
        or isinstance(threshold, bool)
        or not 0 < threshold < 1
    ):
        errors["threshold"] = "give the error rate as a share between 0 and 1 (e.g. 0.05 for 5%)"
    if not isinstance(window_s, int) or not 60 <= window_s <= 86_400:
        errors["window_s"] = "the window is 60 to 86400 seconds"
    if not isinstance(min_runs, int) or not 1 <= min_runs <= 1_000_000:
        errors["min_runs"] = "min_runs is 1 to 1000000"
    if errors:
        raise AlertConfigError(errors)
    with transaction.atomic():
        rule, created = ErrorRateRule.objects.update_or_create(
            task=task,
            defaults={
                "app": app,
                "threshold": threshold,
                "window_s": window_s,
                "min_runs": min_runs,
            },
        )
        audit(
            app,
            by,
            "alert_rule.create" if created else "alert_rule.update",
            "alert_rule",
            str(rule.pk),
            {"task": task.name, "threshold": threshold, "window_s": window_s, "min_runs": min_runs},
        )
    return rule


def delete_rule(rule: ErrorRateRule, *, by: AbstractBaseUser | None = None) -> None:
    with transaction.atomic():
        audit(
            rule.app, by, "alert_rule.delete", "alert_rule", str(rule.pk), {"task": rule.task.name}
        )
        rule.delete()


# --- raising ----------------------------------------------------------------------------


def console_url(path: str) -> str:
    return settings.WALLE_PUBLIC_URL.rstrip("/") + path


def raise_alert(
    app: App,
    event: str,
    subject: str,
    text: str = "",
    *,
    detail: dict | None = None,
    release: Release | None = None,
    task: Task | None = None,
    link: str = "",
    dedup_key: str | None = None,
    channel: Channel | None = None,
) -> Alert | None:
    """Record an alert, its outbox rows and its audit entry, in the caller's transaction.

    `channel` sends to that channel only (a test). Returns None for a duplicate `dedup_key`.
    """
    task = task or (release.task if release is not None else None)
    payload = {
        "event": event,
        "app": app.slug,
        "subject": subject,
        "text": text,
        "url": console_url(link) if link else "",
        "release": (
            {
                "id": release.pk,
                "name": release.name,
                "task": release.task.name,
                "version": release.version.number,
                "state": release.state,
                "stage": release.current_stage + 1,
                "reason": release.reason,
            }
            if release is not None
            else None
        ),
        "task": {"id": task.pk, "name": task.name} if task is not None else None,
        "detail": detail or {},
        "at": timezone.now().isoformat(),
    }
    try:
        with transaction.atomic():
            alert = Alert.objects.create(
                app=app,
                event=event,
                subject=subject[:300],
                text=text,
                payload=payload,
                release=release,
                task=task,
                dedup_key=dedup_key,
            )
    except IntegrityError:
        return None  # announced already
    payload["id"] = alert.pk
    Alert.objects.filter(pk=alert.pk).update(payload=payload)
    channels = (
        [channel] if channel is not None else list(Channel.objects.filter(app=app, enabled=True))
    )
    now = timezone.now()
    Delivery.objects.bulk_create(
        [
            Delivery(alert=alert, channel=c, next_attempt_at=now)
            for c in channels
            if channel is not None or c.hears(event)
        ]
    )
    audit(
        app,
        None,
        event if event.startswith("alert.") else f"alert.{event}",
        "alert",
        str(alert.pk),
        {"subject": subject, "event": event, "channels": [c.name for c in channels]},
    )
    return alert


# --- delivering -------------------------------------------------------------------------


def backoff_s(attempts: int, rng: random.Random | None = None) -> float:
    """Delay before attempt `attempts + 1`: exponential, capped, with jitter (half to full)."""
    rng = rng or random.Random()
    full = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** max(0, attempts - 1))
    return full * rng.uniform(0.5, 1.0)


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """`X-Walle-Signature`: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>`."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def body_of(alert: Alert) -> bytes:
    return json.dumps(alert.payload, sort_keys=True, separators=(",", ":")).encode()


def _refuse_private(url: str) -> str | None:
    """With WALLE_ALERT_PRIVATE_WEBHOOKS off, refuse receivers on private or local addresses
    (checked at send time, against what the name resolves to then)."""
    if settings.WALLE_ALERT_PRIVATE_WEBHOOKS:
        return None
    host = urlsplit(url).hostname or ""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError as exc:
        return f"cannot resolve {host}: {exc}"
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved:
            return f"{host} resolves to {ip}, a private address; receivers must be public"
    return None


def _send(delivery: Delivery) -> tuple[bool, int | None, str]:
    channel, alert = delivery.channel, delivery.alert
    if channel.kind == ChannelKind.EMAIL:
        text = alert.text + (f"\n\n{alert.payload.get('url')}" if alert.payload.get("url") else "")
        try:
            EmailMessage(
                f"[Walle {alert.app.slug}] {alert.subject}",
                text,
                settings.DEFAULT_FROM_EMAIL,
                channel.emails,
            ).send()
        except Exception as exc:  # any backend error is worth another try
            return False, None, f"{type(exc).__name__}: {exc}"
        return True, None, ""
    if refused := _refuse_private(channel.url):
        return False, None, refused
    body = body_of(alert)
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Walle-Alerts/1",
        "X-Walle-Event": alert.event,
        "X-Walle-Delivery": str(delivery.pk),
        "X-Walle-Signature": signature(channel.secret, timestamp, body),
    }
    try:
        response = httpx.post(
            channel.url,
            content=body,
            headers=headers,
            timeout=SEND_TIMEOUT_S,
            follow_redirects=False,
        )
    except httpx.HTTPError as exc:
        return False, None, f"{type(exc).__name__}: {exc}"
    if 200 <= response.status_code < 300:
        return True, response.status_code, ""
    return (
        False,
        response.status_code,
        f"the receiver answered {response.status_code}: {response.text[:200]}",
    )


def _claim(delivery_id: int, now: datetime) -> bool:
    """Take a due delivery for LEASE_S; False if another worker holds it."""
    return bool(
        Delivery.objects.filter(pk=delivery_id, state=DeliveryState.PENDING)
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        .update(claimed_until=now + timedelta(seconds=LEASE_S))
    )


def deliver_due(
    *, now: datetime | None = None, limit: int = 50, rng: random.Random | None = None
) -> dict:
    """Send every due delivery (up to `limit`); returns how many were delivered, retried, given up."""
    now = now or timezone.now()
    done = {"delivered": 0, "retrying": 0, "failed": 0}
    due = list(
        Delivery.objects.filter(state=DeliveryState.PENDING, next_attempt_at__lte=now)
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        .order_by("next_attempt_at", "id")
        .values_list("id", flat=True)[:limit]
    )
    for delivery_id in due:
        if not _claim(delivery_id, now):
            continue
        delivery = Delivery.objects.select_related("alert", "alert__app", "channel").get(
            pk=delivery_id
        )
        ok, status, error = _send(delivery)
        finished = timezone.now()
        with transaction.atomic():
            delivery.attempts += 1
            delivery.response_status = status
            delivery.claimed_until = None
            if ok:
                delivery.state = DeliveryState.DELIVERED
                delivery.delivered_at = finished
                delivery.last_error = ""
                done["delivered"] += 1
            elif delivery.attempts >= MAX_ATTEMPTS:
                delivery.state = DeliveryState.FAILED
                delivery.last_error = error[:2000]
                done["failed"] += 1
                audit(
                    delivery.alert.app,
                    None,
                    "alert.delivery_failed",
                    "alert",
                    str(delivery.alert_id),
                    {
                        "channel": delivery.channel.name,
                        "attempts": delivery.attempts,
                        "error": error[:300],
                    },
                )
            else:
                delivery.last_error = error[:2000]
                delivery.next_attempt_at = finished + timedelta(
                    seconds=backoff_s(delivery.attempts, rng)
                )
                done["retrying"] += 1
            delivery.save()
    return done


# --- the task error-rate rules ----------------------------------------------------------


def check_error_rates(*, now: datetime | None = None, force: bool = False) -> int:
    """Evaluate every error-rate rule due for a check; returns the alerts raised."""
    now = now or timezone.now()
    raised = 0
    cutoff = now - timedelta(seconds=RULE_CHECK_EVERY_S)
    rules = (
        ErrorRateRule.objects.all()
        if force
        else ErrorRateRule.objects.filter(
            Q(last_checked_at__isnull=True) | Q(last_checked_at__lte=cutoff)
        )
    )
    for rule_id in rules.values_list("id", flat=True):
        with transaction.atomic():
            # Several workers serialize on the rule: one of them raises the alert.
            rule = (
                ErrorRateRule.objects.select_for_update(no_key=True)
                .select_related("task", "app")
                .filter(pk=rule_id)
                .first()
            )
            if rule is None:
                continue
            totals = RunStat.objects.filter(
                device__app_id=rule.app_id,
                task=rule.task.name,
                received_at__gte=now - timedelta(seconds=rule.window_s),
                received_at__lte=now,
            ).aggregate(runs=Sum("runs"), errors=Sum("errors"))
            runs, errors = totals["runs"] or 0, totals["errors"] or 0
            rate = errors / runs if runs >= rule.min_runs else None
            rule.last_rate, rule.last_runs, rule.last_checked_at = rate, runs, now
            window = (
                f"{rule.window_s // 60} min" if rule.window_s % 60 == 0 else f"{rule.window_s} s"
            )
            link = f"/apps/{rule.app.slug}/tasks/{rule.task_id}/health/"
            detail = {
                "rate": rate,
                "runs": runs,
                "errors": errors,
                "threshold": rule.threshold,
                "window_s": rule.window_s,
            }
            if rate is not None and rate > rule.threshold and not rule.firing:
                rule.firing = True
                raised += bool(
                    raise_alert(
                        rule.app,
                        AlertEvent.TASK_ERROR_RATE,
                        f"{rule.task.name}: {rate:.1%} of runs failed in the last {window} (threshold {rule.threshold:.1%})",
                        f"{errors} of {runs} runs of {rule.task.name} failed across the fleet in the last {window}; "
                        f"the alert threshold is {rule.threshold:.1%}.",
                        detail=detail,
                        task=rule.task,
                        link=link,
                    )
                )
            elif rule.firing and rate is not None and rate <= rule.threshold:
                rule.firing = False
                raised += bool(
                    raise_alert(
                        rule.app,
                        AlertEvent.TASK_ERROR_RATE_RECOVERED,
                        f"{rule.task.name}: error rate back to {rate:.1%} (threshold {rule.threshold:.1%})",
                        f"{errors} of {runs} runs failed in the last {window}.",
                        detail=detail,
                        task=rule.task,
                        link=link,
                    )
                )
            rule.save()
    return raised
