"""Safe defaults: DEBUG off unless a development command turns it on, no start with the public
secret key, `check --deploy` clean with the documented production settings, a CSP on every
page, /metrics behind a token, and a push listener that survives a malformed notice."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from devices.push import NOTICE_GROUP, registry

ROOT = Path(__file__).resolve().parents[2]

# The production settings docs/operations.md documents (values are examples).
PRODUCTION_ENV = {
    "WALLE_SECRET_KEY": "",  # filled per test
    "WALLE_ALLOWED_HOSTS": "walle.example.com",
    "WALLE_CSRF_TRUSTED_ORIGINS": "https://walle.example.com",
    "WALLE_HTTPS": "1",
    "WALLE_TRUST_X_FORWARDED_PROTO": "1",
    "WALLE_METRICS_TOKEN": "a-long-random-scrape-token",
}


def run_python(args: list[str], env: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    """Python in the project directory with none of this process's WALLE_/DJANGO_ settings,
    only `env` (and a var directory of the test's own)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("WALLE_", "DJANGO_"))}
    clean |= {"WALLE_VAR_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "walle_web.settings"}
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def run_django(code: str, env: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    return run_python(["-c", code], env, tmp_path)


def run_manage(args: list[str], tmp_path: Path, env: dict | None = None):
    return run_python(["manage.py", *args], env or {}, tmp_path)


SETUP = "import django; django.setup(); from django.conf import settings; "


def test_debug_is_off_and_the_public_key_refused_unless_development_turns_them_on(tmp_path):
    refused = run_django(SETUP + "print(settings.DEBUG)", {}, tmp_path)
    assert refused.returncode != 0
    assert "ImproperlyConfigured" in refused.stderr and "WALLE_SECRET_KEY" in refused.stderr
    dev_key = run_django(
        SETUP + "print(settings.DEBUG)",
        {"WALLE_SECRET_KEY": "dev-insecure-walle-secret-key-change-me-in-production"},
        tmp_path,
    )
    assert dev_key.returncode != 0
    production = run_django(
        SETUP + "print(settings.DEBUG)", {"WALLE_SECRET_KEY": secrets.token_urlsafe(50)}, tmp_path
    )
    assert production.stdout.strip() == "False", production.stderr
    development = run_django(SETUP + "print(settings.DEBUG)", {"WALLE_DEBUG": "1"}, tmp_path)
    assert development.stdout.strip() == "True", development.stderr


def test_schema_commands_run_without_a_secret_key_and_nothing_else_does(tmp_path):
    """`makemigrations --check` (CI, a packager) needs no key; serving and checks still do."""
    check = run_manage(["makemigrations", "--check", "--dry-run"], tmp_path)
    assert check.returncode == 0, check.stderr
    assert "No changes detected" in check.stdout
    assert run_manage(["showmigrations", "devices"], tmp_path).returncode == 0
    for refused in (["check"], ["migrate", "--noinput"], ["createsuperuser", "--noinput"]):
        result = run_manage(refused, tmp_path)
        assert result.returncode != 0, refused
        assert "WALLE_SECRET_KEY" in result.stderr, refused


def test_check_deploy_is_clean_with_the_documented_production_settings(tmp_path):
    env = PRODUCTION_ENV | {"WALLE_SECRET_KEY": secrets.token_urlsafe(50)}
    proc = run_manage(["check", "--deploy", "--fail-level", "WARNING"], tmp_path, env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no issues" in proc.stdout


@pytest.mark.django_db
def test_every_page_carries_a_content_security_policy(client):
    page = client.get("/login/")
    policy = page.headers["Content-Security-Policy"]
    assert (
        "script-src 'self'" in policy and "'unsafe-inline'" not in policy.split("style-src-attr")[0]
    )
    assert "frame-ancestors 'none'" in policy
    assert b"<script>" not in page.content and b"onclick=" not in page.content
    docs = client.get("/api/docs/")
    assert docs.status_code == 200 and b"<script>" not in docs.content


@pytest.mark.django_db
def test_unknown_api_urls_and_django_refusals_answer_json(client):
    response = client.get("/api/v1/no-such-thing/")
    assert response.status_code == 404 and response.json()["detail"] == "not found"
    nul = client.get("/api/v1/tasks/?app=%00")
    assert nul.status_code == 400 and "NUL" in nul.json()["detail"]


# --- the push listener --------------------------------------------------------------------

NOTICE = {
    "type": "release.notice",
    "app": 1,
    "task": "item-features",
    "version": 2,
    "digest": "a" * 64,
    "device_uids": ["dev-1"],
}


def test_a_malformed_notice_does_not_stop_the_push_listener(settings):
    """A notice the listener cannot read (a bug, another version's publisher): it logs it and
    goes on with the next."""

    class FakeSocket:
        device_uid = "dev-listener"

        def __init__(self):
            self.frames: list[str] = []

        async def send(self, text_data=None, bytes_data=None, close=False):
            self.frames.append(text_data)

    socket = FakeSocket()

    async def go():
        import asyncio

        registry.add(socket)
        await registry.listening()
        layer = get_channel_layer()
        await layer.group_send(NOTICE_GROUP, {"type": "release.notice", "task": "t"})
        await layer.group_send(NOTICE_GROUP, {**NOTICE, "device_uids": [socket.device_uid]})
        for _ in range(200):
            if socket.frames:
                break
            await asyncio.sleep(0.01)
        registry.remove(socket)

    async_to_sync(go)()
    assert socket.frames and json.loads(socket.frames[0])["type"] == "notify"
