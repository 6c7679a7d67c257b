from __future__ import annotations

from django.db import models

from accounts.models import App
from devices.choices import GroupKind


class Device(models.Model):
    """A phone (or simulated one) enrolled into one app; it authenticates with a secret token."""

    app = models.ForeignKey(App, on_delete=models.CASCADE, related_name="devices")
    uid = models.CharField(
        max_length=40, unique=True, help_text="Public device id, used in bucketing."
    )
    token_hash = models.CharField(max_length=64)
    app_version = models.CharField(max_length=40, blank=True, default="")
    os = models.CharField(max_length=40, blank=True, default="")
    os_version = models.CharField(max_length=40, blank=True, default="")
    model = models.CharField(max_length=80, blank=True, default="")
    region = models.CharField(max_length=40, blank=True, default="")
    tags = models.JSONField(default=list, blank=True)
    engine_version = models.CharField(max_length=40, blank=True, default="")
    # {task name: {"version": n, "digest": "..."}} as the device last said in `hello`.
    current = models.JSONField(default=dict, blank=True)
    online = models.BooleanField(default=False, db_index=True)
    last_seen = models.DateTimeField(null=True, blank=True, db_index=True)
    enrolled_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["app", "model"]), models.Index(fields=["app", "online"])]

    def __str__(self) -> str:
        return self.uid

    def attrs(self) -> dict:
        """The attributes release targeting looks at."""
        return {
            "app_version": self.app_version,
            "os": self.os,
            "os_version": self.os_version,
            "model": self.model,
            "region": self.region,
            "tags": list(self.tags or []),
            "engine_version": self.engine_version,
        }


class DeviceGroup(models.Model):
    """A named set of devices: explicit members, or a saved filter evaluated when used."""

    app = models.ForeignKey(App, on_delete=models.CASCADE, related_name="device_groups")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=16, choices=GroupKind.choices, default=GroupKind.STATIC)
    filter = models.JSONField(
        default=dict, blank=True, help_text="Attribute filter of a dynamic group."
    )
    members = models.ManyToManyField(Device, blank=True, related_name="groups")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["app", "name"]
        constraints = [models.UniqueConstraint(fields=["app", "name"], name="uniq_group_name")]

    def __str__(self) -> str:
        return f"{self.app.slug}/{self.name}"


class Result(models.Model):
    """One result a task uploaded through the tunnel; the idempotency key makes retries harmless."""

    app = models.ForeignKey(App, on_delete=models.CASCADE, related_name="results")
    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="results")
    task = models.CharField(max_length=100, db_index=True)
    version = models.PositiveIntegerField()
    key = models.CharField(max_length=128, unique=True)
    payload = models.JSONField()
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-received_at", "-id"]

    def __str__(self) -> str:
        return f"{self.task} v{self.version} {self.key[:12]}"


class RunStat(models.Model):
    """Run outcomes a device reported for one task version over a period."""

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="run_stats")
    message_id = models.CharField(max_length=64)
    task = models.CharField(max_length=100)
    version = models.PositiveIntegerField()
    runs = models.PositiveIntegerField()
    errors = models.PositiveIntegerField()
    latency_ms_p50 = models.FloatField(null=True, blank=True)
    latency_ms_p95 = models.FloatField(null=True, blank=True)
    last_error = models.JSONField(null=True, blank=True)
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-received_at"]
        constraints = [
            models.UniqueConstraint(fields=["device", "message_id"], name="uniq_run_stat_message")
        ]
        # Run health and new-vs-control read one task over a time window.
        indexes = [models.Index(fields=["task", "received_at"])]

    def __str__(self) -> str:
        return f"{self.device} {self.task} v{self.version}: {self.runs} runs"
