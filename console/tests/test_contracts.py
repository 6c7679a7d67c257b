"""The REST calls the console's JavaScript makes, with the bodies it builds, against the real
API: if a field is renamed on either side, this fails here and not in a user's browser."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.cast import make_version

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]

# What console/static/console/wizard.js posts when every field of the wizard is filled in.
WIZARD_BODY = {
    "name": "item-features v2 to beta",
    "target": {
        "models": ["Pixel*", "Galaxy S24"],
        "app_version": ">=10.0,<11",
        "tags_any": ["beta"],
    },
    "stages": [
        {
            "basis_points": 100,
            "soak_s": 300,
            "success_gate": 0.95,
            "error_gate": 0.2,
            "min_finished": 5,
            "auto_advance": False,
        },
        {
            "basis_points": 10_000,
            "success_gate": 0.95,
            "error_gate": 0.2,
            "min_finished": 5,
            "auto_advance": True,
        },
    ],
    "delivery": {
        "notify_rate": 50,
        "ramp": 2,
        "max_in_flight": 100,
        "timeout_s": 600,
        "max_retries": 3,
        "pull_jitter_s": 1.5,
    },
    "on_error": "rollback",
    "salt": "0123456789abcdef",
}


def test_the_wizard_body_creates_a_release_with_every_policy_field(cast):
    api = cast.api("operator")
    v2 = make_version(cast.task, source=b"def run(ctx):\n    return 2\n")
    created = api.post("/api/v1/releases/", {**WIZARD_BODY, "version": v2.pk}, format="json")
    assert created.status_code == 201, created.content
    release = created.json()
    assert release["on_error"] == "rollback"
    assert release["delivery"]["notify_rate"] == 50 and release["delivery"]["ramp"] == 2
    assert release["stages"][0]["auto_advance"] is False
    assert release["salt"] == WIZARD_BODY["salt"]


def test_the_wizard_preview_uses_the_same_salt_as_the_release(cast):
    api = cast.api("operator")
    body = {"version": cast.version.pk, "target": {}, "stages": WIZARD_BODY["stages"], "salt": "s"}
    preview = api.post("/api/v1/releases/preview/", body, format="json")
    assert preview.status_code == 200, preview.content
    assert preview.json()["total"] == len(cast.devices)
    assert len(preview.json()["stages"]) == 2


def test_the_dashboard_actions_and_monitoring_answer_what_the_page_reads(cast):
    api = cast.api("operator")
    created = api.post(
        "/api/v1/releases/",
        {**WIZARD_BODY, "target": {}, "version": cast.version.pk},
        format="json",
    ).json()
    rid = created["id"]
    assert api.post(f"/api/v1/releases/{rid}/start/").status_code == 200
    paused = api.post(f"/api/v1/releases/{rid}/pause/", {"reason": "look"}, format="json")
    assert paused.status_code == 200 and paused.json()["state"] == "paused"
    assert paused.json()["reason"] == "look"
    assert api.post(f"/api/v1/releases/{rid}/resume/").json()["state"] == "running"
    monitoring = api.get(f"/api/v1/releases/{rid}/monitoring/").json()
    for key in ("counts", "stages", "time_series", "failure_reasons", "run_metrics"):
        assert key in monitoring, key
    assert set(monitoring["run_metrics"]) >= {"new", "control"}
    # The dashboard asks for a subset: every `m.<section>` it reads must be in its request.
    script = (ROOT / "console/static/console/dashboard.js").read_text()
    asked = re.search(r'"monitoring/\?sections=([a-z_,]+)"', script)
    assert asked, "dashboard.js no longer names the monitoring sections it reads"
    details = script[script.index("async function loadDetails()") :]
    details = details[: details.index("\n  }\n")]
    reads = set(re.findall(r"\bm\.([a-z_]+)", details))
    assert reads and reads <= set(asked.group(1).split(",")), reads
    subset = api.get(f"/api/v1/releases/{rid}/monitoring/?sections={asked.group(1)}")
    assert subset.status_code == 200 and reads <= set(subset.json())
    # A viewer reads the same but may not act: the dashboard hides the buttons, the API refuses.
    viewer = cast.api("viewer")
    assert viewer.get(f"/api/v1/releases/{rid}/monitoring/").status_code == 200
    assert viewer.post(f"/api/v1/releases/{rid}/pause/").status_code == 403
    outsider = cast.api("outsider")
    assert outsider.get(f"/api/v1/releases/{rid}/").status_code == 404


def test_the_device_page_pins_and_shows_the_pin(cast):
    from django.test import Client
    from django.urls import reverse

    device = cast.devices[0]
    pinned = cast.api("operator").post(
        "/api/v1/pins/",
        {"device": device.uid, "version": cast.version.pk, "reason": "ticket 7"},
        format="json",
    )
    assert pinned.status_code == 201, pinned.content
    assert (
        cast.api("viewer")
        .post("/api/v1/pins/", {"device": device.uid, "version": cast.version.pk}, format="json")
        .status_code
        == 403
    )
    client = Client()
    client.force_login(cast.viewer)
    page = client.get(
        reverse("console:device", kwargs={"slug": cast.app.slug, "uid": device.uid})
    ).content.decode()
    assert "ticket 7" in page and "data-unpin" not in page  # a viewer sees it, cannot unpin


def test_a_scheduled_release_from_the_wizard_waits_as_a_draft(cast):
    from datetime import timedelta

    from django.utils import timezone

    api = cast.api("operator")
    at = (timezone.now() + timedelta(hours=1)).isoformat()
    body = {**WIZARD_BODY, "target": {}, "version": cast.version.pk, "scheduled_at": at}
    created = api.post("/api/v1/releases/", body, format="json").json()
    started = api.post(f"/api/v1/releases/{created['id']}/start/")
    assert started.status_code == 200
    assert started.json()["state"] == "draft" and started.json()["scheduled_at"]
