"""Gray releases: stages and gates, pacing, timeouts, actions, rollback, pins, monitoring."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st

from accounts.models import AuditEntry
from devices import targeting
from devices.services import device_hello
from releases.desired import desired_state
from releases.models import Deployment, Release
from releases.reports import record_report
from releases.rollout import evaluate_release
from releases.services import (
    ReleaseError,
    abort_release,
    advance_release,
    create_release,
    pause_release,
    pin_device,
    resume_release,
    rollback_release,
    start_release,
)
from tests.cast import make_device, make_version

pytestmark = pytest.mark.django_db

THREE_STAGES = [
    {"basis_points": 2000, "soak_s": 60, "success_gate": 0.9, "error_gate": 0.3, "min_finished": 2},
    {"basis_points": 5000, "soak_s": 60, "success_gate": 0.9, "error_gate": 0.3, "min_finished": 2},
    {"basis_points": 10000, "soak_s": 0, "success_gate": 0.9, "error_gate": 0.3, "min_finished": 2},
]


@pytest.fixture
def fleet(cast):
    """The cast plus 40 more devices, enough for stages to differ."""
    models = ["Pixel 8", "Galaxy S24", "iPhone 15", "Moto G84"]
    for i in range(40):
        device, token = make_device(cast.enroll_key, model=models[i % 4])
        cast.devices.append(device)
        cast.tokens[device.uid] = token
    return cast


def finish(
    release: Release,
    state: str = "succeeded",
    model: str | None = None,
    error_code: str = "run_failed",
) -> int:
    n = 0
    for dep in Deployment.objects.filter(
        release=release, state__in=["pending", "notified"]
    ).select_related("device"):
        if model and dep.device.model != model:
            continue
        record_report(dep.device, dep.pk, "downloading")
        record_report(
            dep.device,
            dep.pk,
            state,
            error_code=error_code if state == "failed" else "",
            error="boom" if state == "failed" else "",
        )
        n += 1
    return n


def test_a_stage_admits_exactly_the_devices_whose_bucket_is_below_its_share(fleet):
    release = start_release(create_release(fleet.version, stages=THREE_STAGES, salt="s1"))
    expected = {d.uid for d in fleet.devices if targeting.bucket("s1", d.uid) < 2000}
    assert (
        set(Deployment.objects.filter(release=release).values_list("device__uid", flat=True))
        == expected
    )
    assert all(
        dep.bucket == targeting.bucket("s1", dep.device.uid)
        for dep in Deployment.objects.filter(release=release)
    )


def test_it_advances_after_the_soak_when_the_success_gate_holds(fleet):
    release = start_release(create_release(fleet.version, stages=THREE_STAGES, salt="s1"))
    first = Deployment.objects.filter(release=release).count()
    finish(release)
    now = timezone.now()
    assert evaluate_release(release, now=now) == "waiting"  # still soaking
    assert evaluate_release(release, now=now + timedelta(seconds=61)) == "advanced"
    release.refresh_from_db()
    assert release.current_stage == 1
    assert (
        Deployment.objects.filter(release=release).count()
        == sum(1 for d in fleet.devices if targeting.bucket("s1", d.uid) < 5000)
        > first
    )


def test_it_does_not_advance_while_the_success_gate_fails(fleet):
    release = start_release(create_release(fleet.version, stages=THREE_STAGES, salt="s1"))
    assert (
        evaluate_release(release, now=timezone.now() + timedelta(seconds=61)) == "waiting"
    )  # nobody succeeded yet
    assert Release.objects.get(pk=release.pk).current_stage == 0


def test_it_completes_after_the_last_stage(fleet):
    release = start_release(
        create_release(fleet.version, stages=[{"basis_points": 10000, "success_gate": 0.5}])
    )
    finish(release)
    assert evaluate_release(release) == "completed"
    assert Release.objects.get(pk=release.pk).state == "completed"
    late, _ = make_device(fleet.enroll_key)
    assert desired_state(late)[0]["version"] == 1  # a completed release still reaches late joiners


def test_it_pauses_when_the_error_gate_trips_and_says_why(fleet):
    release = start_release(
        create_release(
            fleet.version, stages=[{"basis_points": 10000, "error_gate": 0.1, "min_finished": 3}]
        )
    )
    finish(release, "failed", model="Moto G84")  # every report evaluates the gate
    release.refresh_from_db()
    assert release.state == "paused"
    assert (
        "error gate of stage 1 tripped" in release.reason
        and "run_failed on Moto G84" in release.reason
    )


def test_the_error_gate_waits_for_min_finished(fleet):
    release = start_release(
        create_release(
            fleet.version, stages=[{"basis_points": 10000, "error_gate": 0.1, "min_finished": 1000}]
        )
    )
    finish(release, "failed", model="Moto G84")
    assert Release.objects.get(pk=release.pk).state == "running"


def test_a_stage_smaller_than_min_finished_is_judged_once_all_of_it_finished(fleet):
    moto = [d for d in fleet.devices if d.model == "Moto G84"]
    release = start_release(
        create_release(
            fleet.version,
            target={"models": ["Moto G84"]},
            stages=[{"basis_points": 10000, "error_gate": 0.1, "min_finished": 1000}],
        )
    )
    assert Deployment.objects.filter(release=release).count() == len(moto) < 1000
    finish(release, "failed", model="Moto G84")
    release.refresh_from_db()
    assert release.state == "paused" and "error gate of stage 1 tripped" in release.reason


def test_it_rolls_back_when_the_release_says_so(fleet):
    good = start_release(create_release(fleet.version))
    finish(good)
    assert evaluate_release(good) == "completed"
    v2 = make_version(fleet.task, b"def run(ctx):\n    raise RuntimeError('bad model')\n")
    bad = start_release(
        create_release(
            v2,
            stages=[{"basis_points": 10000, "error_gate": 0.2, "min_finished": 3}],
            on_error="rollback",
        )
    )
    finish(bad, "failed")
    bad.refresh_from_db()
    assert bad.state == "rolled_back" and "error gate" in bad.reason
    rollback = Release.objects.get(rollback_of=bad)
    assert rollback.version == fleet.version and rollback.state == "running"
    assert {d["version"] for dev in fleet.devices for d in desired_state(dev)} == {1}


def test_timed_out_deployments_count_against_the_error_gate(fleet):
    release = start_release(
        create_release(
            fleet.version,
            stages=[{"basis_points": 10000, "error_gate": 0.5, "min_finished": 1}],
            delivery={"timeout_s": 30},
        )
    )
    for dev in fleet.devices[:4]:
        device_hello(dev, {}, {})  # notified now
    assert evaluate_release(release, now=timezone.now() + timedelta(seconds=31)) == "paused"
    assert Deployment.objects.filter(release=release, state="timed_out").count() == 4
    assert "timed out" in Release.objects.get(pk=release.pk).reason


def test_notices_are_paced_by_rate_and_capped_in_flight(fleet):
    for dev in fleet.devices:
        type(dev).objects.filter(pk=dev.pk).update(online=True)
    release = start_release(create_release(fleet.version, delivery={"notify_rate": 5}))
    assert (
        Deployment.objects.filter(release=release, state="notified").count() == 0
    )  # the worker rings, not the start
    started = Release.objects.get(pk=release.pk).started_at
    evaluate_release(release, now=started + timedelta(seconds=1))
    assert Deployment.objects.filter(release=release, state="notified").count() == 5
    evaluate_release(release, now=started + timedelta(seconds=2))
    assert Deployment.objects.filter(release=release, state="notified").count() == 10
    capped = start_release(create_release(make_version(fleet.task), delivery={"max_in_flight": 7}))
    evaluate_release(capped)
    evaluate_release(capped)
    assert Deployment.objects.filter(release=capped, state="notified").count() == 7


def test_a_paced_release_does_not_hand_its_version_to_a_device_before_ringing_it(fleet):
    release = start_release(create_release(fleet.version, delivery={"notify_rate": 1}))
    assert desired_state(fleet.devices[0]) == []
    Deployment.objects.filter(release=release, device=fleet.devices[0]).update(state="notified")
    assert desired_state(fleet.devices[0])[0]["release"] == release.pk


def test_actions_follow_the_state_machine(fleet):
    release = create_release(fleet.version, stages=THREE_STAGES)
    with pytest.raises(ReleaseError, match="only a running release"):
        pause_release(release)
    start_release(release)
    pause_release(release, reason="looking at crash logs")
    assert Release.objects.get(pk=release.pk).reason == "looking at crash logs"
    resume_release(release)
    with pytest.raises(ReleaseError, match="only a paused release"):
        resume_release(release)
    advance_release(release)
    advance_release(release)
    with pytest.raises(ReleaseError, match="already at its last stage"):
        advance_release(release)
    abort_release(release)
    with pytest.raises(ReleaseError, match="it is aborted"):
        resume_release(release)
    actions = list(
        AuditEntry.objects.filter(target_id=str(release.pk)).values_list("action", flat=True)
    )
    assert (
        actions.count("release.advance") == 2
        and "release.pause" in actions
        and "release.abort" in actions
    )


def test_an_aborted_release_rings_no_new_devices_but_in_flight_ones_finish(fleet):
    release = start_release(create_release(fleet.version))
    notified = fleet.devices[0]
    device_hello(notified, {}, {})
    abort_release(release)
    assert desired_state(notified)[0]["release"] == release.pk
    assert desired_state(fleet.devices[1]) == []


def test_rollback_without_a_previous_version_is_refused(fleet):
    release = start_release(create_release(fleet.version))
    with pytest.raises(ReleaseError, match="no previous good version"):
        rollback_release(release)


def test_a_rollback_to_a_chosen_version_keeps_stages_when_asked(fleet):
    v2 = make_version(fleet.task)
    release = start_release(create_release(v2, stages=THREE_STAGES, salt="keep"))
    rollback = rollback_release(
        release, to_version=fleet.version, skip_stages=False, reason="latency up"
    )
    assert (
        rollback.stages == release.stages
        and rollback.salt == "keep"
        and rollback.reason == "latency up"
    )


def test_a_pin_wins_over_releases(fleet):
    v2 = make_version(fleet.task)
    start_release(create_release(v2))
    pin_device(fleet.devices[0], fleet.version, reason="support ticket 42")
    assert [(d["version"], d["deployment"]) for d in desired_state(fleet.devices[0])] == [(1, None)]
    assert desired_state(fleet.devices[1])[0]["version"] == 2


def test_the_newer_release_wins_only_where_its_stage_reaches(fleet):
    old = start_release(create_release(fleet.version))
    v2 = make_version(fleet.task)
    new = start_release(create_release(v2, stages=THREE_STAGES, salt="n"))
    for dev in fleet.devices:
        [entry] = desired_state(dev)
        expected = new.pk if targeting.bucket("n", dev.uid) < 2000 else old.pk
        assert entry["release"] == expected


def test_preview_counts_devices_per_stage(fleet):
    body = (
        fleet.api("operator")
        .post(
            "/api/v1/releases/preview/",
            {
                "version": fleet.version.pk,
                "target": {"models": ["Moto G84"]},
                "stages": THREE_STAGES,
                "salt": "p",
            },
            format="json",
        )
        .json()
    )
    motos = [d for d in fleet.devices if d.model == "Moto G84"]
    assert body["total"] == len(motos)
    assert body["stages"] == [
        sum(1 for d in motos if targeting.bucket("p", d.uid) < s["basis_points"])
        for s in THREE_STAGES
    ]


def test_monitoring_reports_counts_series_reasons_and_run_metrics(fleet, settings):
    settings.DEBUG = True  # the debug cursor wrapper formats SQL: a stray '%' would break it
    from devices.services import record_run_stats

    release = start_release(
        create_release(fleet.version, stages=[{"basis_points": 10000, "error_gate": 1.0}])
    )
    finish(release, "failed", model="Moto G84", error_code="hash_mismatch")
    finish(release)
    dev = fleet.devices[0]
    record_run_stats(
        dev,
        {
            "id": "m1",
            "task": fleet.task.name,
            "version": 1,
            "runs": 10,
            "errors": 1,
            "latency_ms_p50": 4.0,
            "latency_ms_p95": 9.0,
        },
    )
    body = fleet.api("viewer").get(f"/api/v1/releases/{release.pk}/monitoring/").json()
    assert body["counts"]["failed"] == sum(1 for d in fleet.devices if d.model == "Moto G84")
    assert (
        body["failure_reasons"][0]["error_code"] == "hash_mismatch"
        and body["failure_reasons"][0]["model"] == "Moto G84"
    )
    assert len(body["failure_reasons"][0]["sample_devices"]) == 5
    assert {p["state"] for p in body["time_series"]} >= {"downloading", "failed", "succeeded"}
    assert (
        body["run_metrics"]["new"]["runs"] == 10 and body["run_metrics"]["new"]["error_rate"] == 0.1
    )


def test_monitoring_computes_only_the_sections_asked_for(fleet):
    release = start_release(
        create_release(fleet.version, stages=[{"basis_points": 10000, "error_gate": 1.0}])
    )
    finish(release, "failed", model="Moto G84", error_code="hash_mismatch")
    api = fleet.api("viewer")
    url = f"/api/v1/releases/{release.pk}/monitoring/"
    full = api.get(url).json()
    part = api.get(url + "?sections=stages,failure_reasons").json()
    # The counts always come; of the sections, exactly those asked for, equal to the full answer.
    assert set(full) - set(part) == {"time_series", "run_metrics", "explain", "running"}
    for key in part:
        assert part[key] == full[key], key
    assert set(api.get(url + "?sections=").json()) == set(full) - set(
        ("stages", "time_series", "failure_reasons", "run_metrics", "explain", "running")
    )
    bad = api.get(url + "?sections=stages,everything")
    assert bad.status_code == 400
    assert "unknown monitoring section everything" in bad.json()["sections"][0]


def test_wrong_state_actions_are_409_with_the_reason(fleet):
    api = fleet.api("operator")
    rid = api.post("/api/v1/releases/", {"version": fleet.version.pk}, format="json").json()["id"]
    response = api.post(f"/api/v1/releases/{rid}/resume/")
    assert response.status_code == 409 and "only a paused release" in response.json()["detail"]
    api.post(f"/api/v1/releases/{rid}/start/")
    response = api.post(f"/api/v1/releases/{rid}/rollback/", {"reason": "x"}, format="json")
    assert response.status_code == 409 and "no previous good version" in response.json()["detail"]
    assert fleet.api("viewer").post(f"/api/v1/releases/{rid}/pause/").status_code == 403


def test_api_rejects_bad_delivery_and_policy(fleet):
    api = fleet.api("operator")
    bad = api.post(
        "/api/v1/releases/",
        {"version": fleet.version.pk, "delivery": {"notify_rate": -1, "speed": 3}},
        format="json",
    )
    assert (
        bad.status_code == 400
        and "unknown keys speed" in str(bad.json())
        and "notify_rate" in str(bad.json())
    )
    bad = api.post(
        "/api/v1/releases/", {"version": fleet.version.pk, "on_error": "explode"}, format="json"
    )
    assert bad.status_code == 400
    bad = api.post(
        "/api/v1/releases/",
        {"version": fleet.version.pk, "target": {"groups": [9999]}},
        format="json",
    )
    assert bad.status_code == 400 and "do not exist" in str(bad.json())


@settings(max_examples=200, deadline=None)
@given(
    salt=st.text(min_size=1, max_size=12),
    uid=st.text(min_size=1, max_size=30),
    low=st.integers(1, 10000),
    high=st.integers(1, 10000),
)
def test_buckets_are_stable_and_raising_a_share_only_adds_devices(salt, uid, low, high):
    b = targeting.bucket(salt, uid)
    assert b == targeting.bucket(salt, uid) and 0 <= b < 10000
    low, high = sorted((low, high))
    assert not (b < low) or (b < high)  # in at the lower share implies in at the higher one
