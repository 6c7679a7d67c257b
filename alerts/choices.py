from __future__ import annotations

from django.db import models

from releases.choices import ReleaseEvent


class ChannelKind(models.TextChoices):
    WEBHOOK = "webhook", "Webhook (HMAC-signed JSON POST)"
    EMAIL = "email", "Email"


class AlertEvent(models.TextChoices):
    """What an app's channels can subscribe to: release outcomes, task error rates, tests."""

    RELEASE_PAUSED_BY_GATE = ReleaseEvent.PAUSED_BY_GATE.value, ReleaseEvent.PAUSED_BY_GATE.label
    RELEASE_FAILED = ReleaseEvent.FAILED.value, ReleaseEvent.FAILED.label
    RELEASE_TIMED_OUT = ReleaseEvent.TIMED_OUT.value, ReleaseEvent.TIMED_OUT.label
    RELEASE_COMPLETED = ReleaseEvent.COMPLETED.value, ReleaseEvent.COMPLETED.label
    TASK_ERROR_RATE = "task.error_rate", "Task error rate above its threshold"
    TASK_ERROR_RATE_RECOVERED = "task.error_rate_recovered", "Task error rate back below it"
    TEST = "alert.test", "Test alert"


class DeliveryState(models.TextChoices):
    PENDING = "pending", "Pending"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Given up"
