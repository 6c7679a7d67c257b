"""System checks: refuse inconsistent settings at start-up, with a hint that says how to fix them."""

from __future__ import annotations

import os

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

DEV_SECRET_PREFIX = "dev-insecure-"


@register(Tags.compatibility)
def check_walle_settings(app_configs, **kwargs):
    problems = []
    engine = settings.DATABASES["default"]["ENGINE"]
    if not settings.DEBUG and settings.SECRET_KEY.startswith(DEV_SECRET_PREFIX):
        problems.append(
            Error(
                "WALLE_DEBUG is off but WALLE_SECRET_KEY is the development default.",
                hint="Set WALLE_SECRET_KEY to a long random value, e.g. `python -c 'import secrets; print(secrets.token_urlsafe(50))'`.",
                id="walle.E001",
            )
        )
    if settings.REDIS_URL and engine.endswith("sqlite3"):
        problems.append(
            Warning(
                "REDIS_URL is set (several server processes) but the database is SQLite.",
                hint="Processes on different machines cannot share a SQLite file: set DATABASE_URL=postgres://… too.",
                id="walle.W001",
            )
        )
    if settings.REDIS_URL and not settings.REDIS_URL.startswith(
        ("redis://", "rediss://", "unix://")
    ):
        problems.append(
            Error(
                f"REDIS_URL {settings.REDIS_URL!r} is not a redis:// URL.",
                hint="Use redis://host:6379/0 (or rediss:// for TLS).",
                id="walle.E002",
            )
        )
    if not settings.WALLE_CONTENT_BASE_URL.endswith("/"):
        problems.append(
            Error(
                "WALLE_CONTENT_BASE_URL must end with '/'.",
                hint=f"Use {settings.WALLE_CONTENT_BASE_URL + '/'!r}.",
                id="walle.E003",
            )
        )
    if settings.REDIS_SOCKET_TIMEOUT and settings.REDIS_SOCKET_TIMEOUT < 30:
        problems.append(
            Warning(
                f"WALLE_REDIS_SOCKET_TIMEOUT={settings.REDIS_SOCKET_TIMEOUT}s would drop idle pub/sub subscribers.",
                hint="Leave it at 0 (no read timeout; health checks detect dead connections) or set it above 30.",
                id="walle.W002",
            )
        )
    if not settings.REDIS_URL and not settings.WALLE_ROLLOUT_IN_SERVER:
        problems.append(
            Warning(
                "WALLE_ROLLOUT_IN_SERVER is off without REDIS_URL: no process can ring the devices "
                "of a paced release or a later stage.",
                hint="Leave WALLE_ROLLOUT_IN_SERVER on (the default) in the embedded configuration; "
                "a separate `rolloutd` reaches no socket there.",
                id="walle.W003",
            )
        )
    content_dir = settings.WALLE_CONTENT_DIR
    parent = content_dir if content_dir.exists() else content_dir.parent
    if parent.exists() and not os.access(parent, os.W_OK):
        problems.append(
            Error(
                f"The content store {content_dir} is not writable.",
                hint="Point WALLE_CONTENT_DIR at a writable directory.",
                id="walle.E004",
            )
        )
    if settings.WALLE_MAX_FILE_BYTES > settings.WALLE_MAX_VERSION_BYTES:
        problems.append(
            Error(
                "WALLE_MAX_FILE_BYTES is larger than WALLE_MAX_VERSION_BYTES.",
                hint="A single file cannot be larger than the whole version: lower WALLE_MAX_FILE_BYTES.",
                id="walle.E005",
            )
        )
    return problems
