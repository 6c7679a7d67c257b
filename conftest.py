"""The fixed cast of the tests: one app with an operator, a viewer and an admin, an outsider
from another app, a small fleet and one task version. Tests read as sentences about them."""

from __future__ import annotations

import pytest

# The live-server fixture and its `live` marker, for the end-to-end tests (tests/live.py).
pytest_plugins = ["tests.live"]


@pytest.fixture(autouse=True)
def _serving_sockets(monkeypatch):
    # The test process is the server: its websocket communicators are the devices' sockets,
    # so what it publishes reaches them (devices.publish.reaches_sockets), whether or not a
    # test imported walle_web.asgi yet.
    from devices import publish

    monkeypatch.setattr(publish, "IN_SERVER", True)


@pytest.fixture(autouse=True)
def _isolated_content(settings, tmp_path):
    from django.core.cache import cache

    # Throttle counters live in the cache: every test starts with none.
    cache.clear()
    settings.WALLE_CONTENT_DIR = tmp_path / "content"
    # The slow default hasher costs ~0.3 s per user; tests make several users each.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # Each test's database starts empty; so does each process's cache of active releases.
    from releases.desired import CACHE

    CACHE.clear()


@pytest.fixture
def cast(db):
    from tests.cast import make_cast

    return make_cast()
