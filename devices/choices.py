from __future__ import annotations

from django.db import models


class GroupKind(models.TextChoices):
    STATIC = "static", "Static (explicit members)"
    DYNAMIC = "dynamic", "Dynamic (saved attribute filter)"
