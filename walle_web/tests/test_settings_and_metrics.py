from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from releases.rollout import evaluate_release
from releases.services import create_release, start_release
from walle_web.checks import check_walle_settings
from walle_web.env import database_from_url


def ids(settings_problems):
    return {p.id for p in settings_problems}


def test_database_urls_parse_for_both_backends(tmp_path):
    pg = database_from_url(
        "postgres://walle:s%40cret@db.local:5433/walle?conn_max_age=60", str(tmp_path), 0
    )
    assert (
        pg["ENGINE"],
        pg["NAME"],
        pg["USER"],
        pg["PASSWORD"],
        pg["HOST"],
        pg["PORT"],
        pg["CONN_MAX_AGE"],
    ) == (
        "django.db.backends.postgresql",
        "walle",
        "walle",
        "s@cret",
        "db.local",
        5433,
        60,
    )
    pooled = database_from_url("postgres://walle@db.local/walle", str(tmp_path), 6)
    assert pooled["CONN_MAX_AGE"] == 0 and pooled["OPTIONS"]["pool"]["max_size"] == 6
    with pytest.raises(ValueError, match="WALLE_DB_POOL_SIZE"):
        database_from_url("postgres://walle@db.local/walle?conn_max_age=60", str(tmp_path), 6)
    assert database_from_url("sqlite:///var/x.sqlite3", str(tmp_path))["NAME"] == str(
        tmp_path / "var/x.sqlite3"
    )
    assert database_from_url("sqlite:////abs/x.sqlite3", str(tmp_path))["NAME"] == "/abs/x.sqlite3"
    with pytest.raises(ValueError, match="not supported"):
        database_from_url("mysql://x/y", str(tmp_path))


def test_inconsistent_settings_are_refused_with_a_hint(settings):
    settings.DEBUG = True  # the test runner turns it off
    assert check_walle_settings(None) == []
    settings.DEBUG = False
    settings.REDIS_URL = "http://not-redis"
    settings.WALLE_CONTENT_BASE_URL = "https://cdn.example/content"
    settings.REDIS_SOCKET_TIMEOUT = 5
    settings.WALLE_MAX_FILE_BYTES = settings.WALLE_MAX_VERSION_BYTES + 1
    problems = check_walle_settings(None)
    settings.REDIS_URL = ""
    settings.WALLE_ROLLOUT_IN_SERVER = False
    problems += check_walle_settings(None)
    assert ids(problems) >= {
        "walle.E001",
        "walle.E002",
        "walle.E003",
        "walle.E005",
        "walle.W001",
        "walle.W002",
        "walle.W003",
    }
    assert all(p.hint for p in problems)


@pytest.mark.django_db
def test_metrics_expose_releases_deployments_and_process_counters(cast, client, settings):
    settings.WALLE_METRICS_TOKEN = "scrape-token"
    start_release(create_release(cast.version))
    assert client.get("/metrics").status_code == 401  # figures span every app
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    body = client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-token").content.decode()
    assert 'walle_releases{state="running"} 1.0' in body
    assert f'walle_deployments{{state="pending"}} {len(cast.devices)}.0' in body
    assert (
        "walle_process_notices_sent_total" in body
        and "walle_process_reports_received_total" in body
    )


@pytest.mark.django_db
def test_a_scheduled_release_is_started_by_the_worker_when_due(cast):
    release = create_release(cast.version)
    at = timezone.now() + timedelta(minutes=5)
    start_release(release, at=at)
    release.refresh_from_db()
    assert release.state == "draft" and release.scheduled_at == at
    assert evaluate_release(release, now=at - timedelta(seconds=1)) == "idle"
    assert evaluate_release(release, now=at + timedelta(seconds=1)) == "started"
    release.refresh_from_db()
    assert release.state == "running"


@pytest.mark.django_db
def test_the_audit_log_says_who_did_what(cast):
    release = start_release(create_release(cast.version, by=cast.operator), by=cast.operator)
    entries = cast.api("viewer").get("/api/v1/apps/shop-android/audit/").json()["results"]
    starts = [e for e in entries if e["action"] == "release.start"]
    assert starts and starts[0]["user"] == "otto" and starts[0]["target_id"] == str(release.pk)
    assert cast.api("outsider").get("/api/v1/apps/shop-android/audit/").status_code == 404
