from __future__ import annotations

from django.conf import settings
from django.db import models

from accounts.models import App
from alerts.choices import AlertEvent, ChannelKind, DeliveryState
from releases.models import Release
from tasks.models import Task


class Channel(models.Model):
    """Where an app's alerts go: a webhook (a JSON POST signed with HMAC-SHA256 of the body
    under the channel's secret) or email addresses (Django's email backend)."""

    app = models.ForeignKey(App, on_delete=models.CASCADE, related_name="alert_channels")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=16, choices=ChannelKind.choices)
    url = models.URLField(max_length=500, blank=True, default="")
    secret = models.CharField(max_length=128, blank=True, default="")
    emails = models.JSONField(default=list, blank=True)
    # AlertEvent values this channel hears; empty means every event.
    events = models.JSONField(default=list, blank=True)
    enabled = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["app", "name", "id"]
        constraints = [
            models.UniqueConstraint(fields=["app", "name"], name="uniq_alert_channel_name")
        ]

    def __str__(self) -> str:
        return f"{self.app.slug}/{self.name} ({self.kind})"

    def hears(self, event: str) -> bool:
        """Test alerts go to the channel they test; otherwise the subscription decides."""
        return self.enabled and (not self.events or event in self.events)


class ErrorRateRule(models.Model):
    """Alert when a task's fleet-wide run error rate over the last `window_s` seconds is above
    `threshold` (with at least `min_runs` runs); once more when it is back below."""

    app = models.ForeignKey(App, on_delete=models.CASCADE, related_name="error_rate_rules")
    task = models.OneToOneField(Task, on_delete=models.CASCADE, related_name="error_rate_rule")
    threshold = models.FloatField(help_text="Share of runs that failed, 0..1.")
    window_s = models.PositiveIntegerField(default=600)
    min_runs = models.PositiveIntegerField(default=20)
    firing = models.BooleanField(default=False)
    last_rate = models.FloatField(null=True, blank=True)
    last_runs = models.PositiveIntegerField(default=0)
    last_checked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.task.name} errors > {self.threshold:.1%}"


class Alert(models.Model):
    """Something an app's channels hear about; every alert is also in the audit log."""

    app = models.ForeignKey(App, on_delete=models.CASCADE, related_name="alerts")
    event = models.CharField(max_length=40, choices=AlertEvent.choices)
    subject = models.CharField(max_length=300)
    text = models.TextField(blank=True, default="")
    payload = models.JSONField(default=dict)
    release = models.ForeignKey(
        Release, null=True, blank=True, on_delete=models.SET_NULL, related_name="alerts"
    )
    task = models.ForeignKey(
        Task, null=True, blank=True, on_delete=models.SET_NULL, related_name="alerts"
    )
    # The same outcome announced twice (two workers, a retried transaction) alerts once.
    dedup_key = models.CharField(max_length=200, null=True, blank=True, unique=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.event}: {self.subject}"


class Delivery(models.Model):
    """The outbox: one alert to one channel, written in the transaction that raised the alert
    and retried with backoff until delivered or given up, so a crash loses nothing."""

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="deliveries")
    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="deliveries")
    state = models.CharField(
        max_length=16, choices=DeliveryState.choices, default=DeliveryState.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    # A worker sending it holds it until then; after a crash another one takes it over.
    claimed_until = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    response_status = models.PositiveIntegerField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["state", "next_attempt_at"])]

    def __str__(self) -> str:
        return f"alert {self.alert_id} to {self.channel_id}: {self.state}"
