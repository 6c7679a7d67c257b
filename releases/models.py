from __future__ import annotations

from django.conf import settings
from django.db import models

from accounts.models import App
from devices.models import Device
from releases.choices import DeploymentState, ErrorAction, ReleaseState, RunningState
from tasks.models import Task, TaskVersion


class Release(models.Model):
    """One task version going out to a target set of devices, stage by stage.

    `stages` is an ordered list of cumulative shares of the target in basis points; a device is
    in stage k when its bucket is below stage k's share, so raising a share only adds devices.
    """

    app = models.ForeignKey(App, on_delete=models.CASCADE, related_name="releases")
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="releases")
    version = models.ForeignKey(TaskVersion, on_delete=models.PROTECT, related_name="releases")
    name = models.CharField(max_length=200, blank=True, default="")
    target = models.JSONField(
        default=dict,
        blank=True,
        help_text="Attribute filters; empty means every device of the app.",
    )
    stages = models.JSONField(default=list)
    delivery = models.JSONField(
        default=dict, blank=True, help_text="Notify rate, in-flight cap, timeouts, retries, jitter."
    )
    on_error = models.CharField(
        max_length=16, choices=ErrorAction.choices, default=ErrorAction.PAUSE
    )
    scheduled_at = models.DateTimeField(
        null=True, blank=True, help_text="Start automatically at this time."
    )
    # Pacing state of the notifier: when it last rang devices, and the fractional budget left over.
    last_notify_at = models.DateTimeField(null=True, blank=True)
    notify_credit = models.FloatField(default=0.0)
    salt = models.CharField(max_length=64)
    state = models.CharField(
        max_length=16, choices=ReleaseState.choices, default=ReleaseState.DRAFT, db_index=True
    )
    current_stage = models.PositiveSmallIntegerField(default=0)
    rollback_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="rollbacks"
    )
    reason = models.TextField(blank=True, default="")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    stage_started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"release {self.pk}: {self.version} ({self.state})"

    def stage_basis_points(self, index: int | None = None) -> int:
        """Cumulative share of the target reached by stage `index` (default: the current one)."""
        if not self.stages:
            return 10_000
        index = self.current_stage if index is None else index
        return int(self.stages[min(index, len(self.stages) - 1)]["basis_points"])


class Deployment(models.Model):
    """One device x one release: where that device is in getting and running the version."""

    release = models.ForeignKey(Release, on_delete=models.CASCADE, related_name="deployments")
    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="deployments")
    bucket = models.PositiveSmallIntegerField(help_text="murmur3_32(salt:device) % 10000")
    stage = models.PositiveSmallIntegerField(default=0)
    state = models.CharField(
        max_length=16,
        choices=DeploymentState.choices,
        default=DeploymentState.PENDING,
        db_index=True,
    )
    attempts = models.PositiveIntegerField(default=0)
    error_code = models.CharField(max_length=40, blank=True, default="")
    error_message = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    notified_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["release", "device"], name="uniq_deployment")
        ]
        indexes = [
            models.Index(fields=["release", "state"]),
            # Stage gates count one stage's states: a covering index (bench/rollout.py).
            models.Index(fields=["release", "stage", "state"]),
        ]

    def __str__(self) -> str:
        return f"{self.device} in release {self.release_id}: {self.state}"


class DeploymentEvent(models.Model):
    """Append-only history of a deployment's transitions; unique per state, so reports are idempotent."""

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="events")
    state = models.CharField(max_length=16, choices=DeploymentState.choices)
    source = models.CharField(max_length=16, default="device")
    error_code = models.CharField(max_length=40, blank=True, default="")
    message = models.TextField(blank=True, default="")
    at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["deployment", "state"], name="uniq_deployment_event")
        ]

    def __str__(self) -> str:
        return f"{self.deployment_id} → {self.state}"


class Pin(models.Model):
    """A device held at one version of a task, whatever the releases say (support, debugging)."""

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="pins")
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="pins")
    version = models.ForeignKey(TaskVersion, on_delete=models.CASCADE, related_name="pins")
    reason = models.CharField(max_length=200, blank=True, default="")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["device", "task"], name="uniq_pin")]

    def __str__(self) -> str:
        return f"{self.device} pinned to {self.version}"


class RunningVersion(models.Model):
    """The version of a task one device runs, as its own reports say (activated, succeeded,
    rolled back), not as it said at its last hello: the fleet, its filters and the release pages
    read this. One row per (device, task), kept by `releases/running.py`."""

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="running")
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="running")
    version = models.ForeignKey(TaskVersion, on_delete=models.CASCADE, related_name="running")
    state = models.CharField(max_length=16, choices=RunningState.choices)
    # The release whose deployment report set this row.
    release = models.ForeignKey(
        Release, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    previous_version = models.ForeignKey(
        TaskVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # A rollback was ordered: the device is expected to switch to this version; cleared by
    # the report that says it did.
    rollback_to = models.ForeignKey(
        TaskVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    since = models.DateTimeField(help_text="When the device reported this version first.")
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["device", "task"], name="uniq_running_version")
        ]
        # The fleet's "runs version N" filter and the release pages count by version.
        indexes = [models.Index(fields=["task", "version"])]

    def __str__(self) -> str:
        return f"{self.device_id} runs {self.version} ({self.state})"
