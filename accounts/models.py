from __future__ import annotations

from django.conf import settings
from django.db import models

from accounts.choices import ROLE_RANK, Role


class App(models.Model):
    """A tenant: one product (e.g. `shop-android`). Tasks, devices and releases belong to one app."""

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class Membership(models.Model):
    """What one user may do in one app: viewers see, operators release, admins manage."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    app = models.ForeignKey(App, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "app"], name="uniq_membership")]

    def __str__(self) -> str:
        return f"{self.user} {self.role} of {self.app}"

    def allows(self, role: str) -> bool:
        return ROLE_RANK[Role(self.role)] >= ROLE_RANK[Role(role)]


class EnrollmentKey(models.Model):
    """A secret a device presents once to enroll into an app; stored hashed, revocable."""

    app = models.ForeignKey(App, on_delete=models.CASCADE, related_name="enrollment_keys")
    label = models.CharField(max_length=100, default="default")
    prefix = models.CharField(max_length=12, help_text="First characters, to recognise a key.")
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.app}:{self.label} ({self.prefix}…)"


class AuditEntry(models.Model):
    """Who did what to which object, and when; append-only."""

    app = models.ForeignKey(App, on_delete=models.CASCADE, related_name="audit_entries")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    action = models.CharField(max_length=64)
    target_type = models.CharField(max_length=32)
    target_id = models.CharField(max_length=64)
    detail = models.JSONField(default=dict, blank=True)
    at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.user} {self.action} {self.target_type}:{self.target_id}"
