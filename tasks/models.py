from __future__ import annotations

from django.conf import settings
from django.db import models

from accounts.models import App


class Blob(models.Model):
    """A file in the content-addressed store; identical content is stored and downloaded once."""

    sha256 = models.CharField(max_length=64, primary_key=True)
    size = models.BigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.sha256[:12]} ({self.size} B)"


class Task(models.Model):
    """A named ML job inside an app: a script, model files and a config, released as versions."""

    app = models.ForeignKey(App, on_delete=models.CASCADE, related_name="tasks")
    name = models.SlugField(max_length=100)
    scene = models.CharField(max_length=100, blank=True, default="")
    description = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["app", "name"]
        constraints = [models.UniqueConstraint(fields=["app", "name"], name="uniq_task_name")]

    def __str__(self) -> str:
        return f"{self.app.slug}/{self.name}"


class TaskVersion(models.Model):
    """An immutable version of a task: a signed manifest of files plus config and entry point.

    Never updated after creation; a change is a new version that records its parent.
    """

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )
    entry_point = models.CharField(max_length=255)
    config = models.JSONField(default=dict, blank=True)
    notes = models.TextField(blank=True, default="")
    manifest = models.JSONField()
    digest = models.CharField(
        max_length=64, db_index=True, help_text="SHA-256 of the canonical manifest."
    )
    signature = models.CharField(
        max_length=128, help_text="Ed25519 signature of the manifest, base64."
    )
    total_size = models.BigIntegerField(default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["task", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["task", "number"], name="uniq_version_number")
        ]

    def __str__(self) -> str:
        return f"{self.task} v{self.number}"


class VersionFile(models.Model):
    """One file of a version: its path in the bundle and its content blob."""

    version = models.ForeignKey(TaskVersion, on_delete=models.CASCADE, related_name="files")
    path = models.CharField(max_length=255)
    blob = models.ForeignKey(Blob, on_delete=models.PROTECT, related_name="uses")

    class Meta:
        ordering = ["path"]
        constraints = [
            models.UniqueConstraint(fields=["version", "path"], name="uniq_version_path")
        ]

    def __str__(self) -> str:
        return self.path
