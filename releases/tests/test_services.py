from __future__ import annotations

import pytest

from devices.choices import GroupKind
from devices.models import DeviceGroup
from devices.services import device_hello
from releases import services
from releases.choices import DeploymentState, ReleaseState
from releases.desired import desired_state
from releases.models import Deployment, DeploymentEvent
from releases.reports import record_report
from releases.services import ReleaseError, create_release, start_release
from tests.cast import make_device, make_version

pytestmark = pytest.mark.django_db


def test_starting_a_release_admits_every_targeted_device(cast):
    release = start_release(create_release(cast.version, by=cast.operator), by=cast.operator)
    assert release.state == ReleaseState.RUNNING
    assert Deployment.objects.filter(release=release).count() == len(cast.devices)
    assert set(Deployment.objects.values_list("state", flat=True)) == {
        DeploymentState.PENDING
    }  # all offline


def test_a_target_filter_limits_the_release(cast):
    release = start_release(
        create_release(cast.version, target={"models": ["Pixel*", "iPhone 15"]})
    )
    models = set(Deployment.objects.filter(release=release).values_list("device__model", flat=True))
    assert models == {"Pixel 8", "iPhone 15"}


def test_a_static_group_target_reaches_its_members_only(cast):
    group = DeviceGroup.objects.create(app=cast.app, name="canaries", kind=GroupKind.STATIC)
    group.members.add(cast.devices[1])
    release = start_release(create_release(cast.version, target={"groups": [group.pk]}))
    assert list(Deployment.objects.filter(release=release).values_list("device", flat=True)) == [
        cast.devices[1].pk
    ]


def test_desired_state_names_the_version_and_the_deployment(cast):
    release = start_release(create_release(cast.version))
    device = cast.devices[0]
    desired = device_hello(device, {"model": device.model}, {})
    assert desired == [
        {
            "task": "item-features",
            "version": 1,
            "digest": cast.version.digest,
            "manifest_url": f"/content/manifests/{cast.version.digest}.json",
            "deployment": Deployment.objects.get(release=release, device=device).pk,
            "release": release.pk,
            "max_retries": 3,
            "retry_backoff_s": 2.0,
            "pull_jitter_s": 0.0,
        }
    ]
    assert Deployment.objects.get(release=release, device=device).state == DeploymentState.NOTIFIED


def test_a_device_enrolled_after_the_start_joins_on_hello(cast):
    release = start_release(create_release(cast.version))
    late, _ = make_device(cast.enroll_key, model="Pixel 8")
    assert not Deployment.objects.filter(device=late).exists()
    desired = device_hello(late, {}, {})
    assert desired[0]["deployment"] == Deployment.objects.get(release=release, device=late).pk


def test_the_newest_running_release_of_a_task_wins(cast):
    start_release(create_release(cast.version))
    v2 = make_version(cast.task, b"def run(ctx):\n    return 2\n")
    newer = start_release(create_release(v2))
    desired = desired_state(cast.devices[0])
    assert [(d["version"], d["release"]) for d in desired] == [(2, newer.pk)]


def test_a_device_never_sees_another_apps_release(cast):
    outsider_device, _ = make_device(cast.other_enroll_key)
    start_release(create_release(cast.version))
    assert desired_state(outsider_device) == []


def test_reports_move_a_deployment_forward_and_are_idempotent(cast):
    release = start_release(create_release(cast.version))
    device = cast.devices[0]
    dep = Deployment.objects.get(release=release, device=device)
    record_report(device, dep.pk, "downloading")
    record_report(device, dep.pk, "downloading")
    record_report(device, dep.pk, "installed")
    record_report(device, dep.pk, "succeeded")
    record_report(device, dep.pk, "installed")  # late duplicate: history has it once, state stays
    dep.refresh_from_db()
    assert dep.state == DeploymentState.SUCCEEDED and dep.attempts == 1 and dep.finished_at
    assert list(DeploymentEvent.objects.filter(deployment=dep).values_list("state", flat=True)) == [
        "downloading",
        "installed",
        "succeeded",
    ]


def test_a_failed_report_keeps_the_reason(cast):
    release = start_release(create_release(cast.version))
    device = cast.devices[0]
    dep = Deployment.objects.get(release=release, device=device)
    record_report(device, dep.pk, "failed", error_code="hash_mismatch", error="main.py differs")
    dep.refresh_from_db()
    assert (dep.state, dep.error_code, dep.error_message) == (
        "failed",
        "hash_mismatch",
        "main.py differs",
    )


def test_a_device_cannot_report_on_another_devices_deployment(cast):
    release = start_release(create_release(cast.version))
    dep = Deployment.objects.get(release=release, device=cast.devices[0])
    with pytest.raises(ReleaseError, match="does not exist for this device"):
        record_report(cast.devices[1], dep.pk, "succeeded")
    with pytest.raises(ReleaseError, match="cannot report"):
        record_report(cast.devices[0], dep.pk, "pending")


@pytest.mark.parametrize(
    ("stages", "fragment"),
    [
        ([], "non-empty"),
        ([{"basis_points": 0}, {"basis_points": 10000}], "outside 1..10000"),
        (
            [{"basis_points": 500}, {"basis_points": 400}, {"basis_points": 10000}],
            "larger than the previous",
        ),
        ([{"basis_points": 500}], "must reach 10000"),
        ([{"percent": 5}], "basis_points"),
    ],
)
def test_invalid_stage_lists_are_refused(cast, stages, fragment):
    with pytest.raises(ReleaseError, match=fragment):
        create_release(cast.version, stages=stages)


def test_invalid_targets_are_refused(cast):
    with pytest.raises(ReleaseError, match="unknown target filter 'modle'"):
        create_release(cast.version, target={"modle": ["x"]})
    with pytest.raises(ReleaseError, match="app_version"):
        create_release(cast.version, target={"app_version": ">=banana"})


def test_only_a_draft_can_be_started(cast):
    release = start_release(create_release(cast.version))
    with pytest.raises(ReleaseError, match="only a draft"):
        services.start_release(release)


def test_release_api_creates_starts_and_lists_deployments(cast):
    api = cast.api("operator")
    created = api.post("/api/v1/releases/", {"version": cast.version.pk}, format="json")
    assert created.status_code == 201, created.content
    rid = created.json()["id"]
    started = api.post(f"/api/v1/releases/{rid}/start/")
    assert started.status_code == 200 and started.json()["state"] == "running"
    assert started.json()["counts"]["total"] == len(cast.devices)
    deployments = api.get(f"/api/v1/releases/{rid}/deployments/").json()
    assert deployments["count"] == len(cast.devices)
    assert api.post(f"/api/v1/releases/{rid}/start/").status_code == 409


def test_viewers_cannot_release_and_outsiders_cannot_see_releases(cast):
    assert (
        cast.api("viewer")
        .post("/api/v1/releases/", {"version": cast.version.pk}, format="json")
        .status_code
        == 403
    )
    # Another app's version reads exactly as a missing one: a 400 that names no app.
    foreign = cast.api("outsider").post(
        "/api/v1/releases/", {"version": cast.version.pk}, format="json"
    )
    missing = cast.api("outsider").post("/api/v1/releases/", {"version": 10**9}, format="json")
    assert foreign.status_code == missing.status_code == 400
    assert "shop-android" not in foreign.text
    assert foreign.json()["version"][0].replace(str(cast.version.pk), "N") == missing.json()[
        "version"
    ][0].replace(str(10**9), "N")
    rid = (
        cast.api("operator")
        .post("/api/v1/releases/", {"version": cast.version.pk}, format="json")
        .json()["id"]
    )
    assert cast.api("viewer").post(f"/api/v1/releases/{rid}/start/").status_code == 403
    assert cast.api("outsider").get(f"/api/v1/releases/{rid}/").status_code == 404


def test_bad_release_input_is_a_clear_400(cast):
    api = cast.api("operator")
    response = api.post(
        "/api/v1/releases/",
        {"version": cast.version.pk, "stages": [{"basis_points": 20000}]},
        format="json",
    )
    assert response.status_code == 400 and "outside 1..10000" in str(response.json())
    assert api.post("/api/v1/releases/", {"version": 999999}, format="json").status_code == 400
