"""The device-facing side of releases: the cached desired state, batched reports, and a
paced release that must not complete while it can still ring someone."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from devices.models import Device
from releases.desired import CACHE, desired_states
from releases.models import Deployment
from releases.reports import Report, record_reports
from releases.rollout import evaluate_release
from releases.services import create_release, start_release
from tests.cast import make_device

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fleet(cast):
    for _ in range(30):
        device, token = make_device(cast.enroll_key, model="Pixel 8")
        cast.devices.append(device)
        cast.tokens[device.uid] = token
    Device.objects.filter(app=cast.app).update(online=True)
    return cast


def test_a_hello_costs_one_query_once_the_releases_are_cached(fleet):
    start_release(create_release(fleet.version))
    devices = list(Device.objects.filter(app=fleet.app))
    desired_states(devices[:1])  # loads the app's releases into this process's cache
    with CaptureQueriesContext(connection) as queries:
        answers = desired_states(devices)
    # One query for all these devices' deployments; nothing per device, no release rows.
    assert len(queries) == 1, [q["sql"] for q in queries]
    assert all(len(a) == 1 for a in answers.values())


def test_a_release_change_reaches_the_cache(fleet):
    device = Device.objects.filter(app=fleet.app).first()
    assert desired_states([device])[device.pk] == []  # cached: no release yet
    release = start_release(create_release(fleet.version))
    assert desired_states([device])[device.pk][0]["release"] == release.pk


def test_a_batch_of_reports_counts_each_report_once(fleet):
    release = start_release(create_release(fleet.version))
    deps = list(Deployment.objects.filter(release=release).select_related("device"))
    reports = [Report(d.device, d.pk, s) for d in deps for s in ("downloading", "installed")]
    outcomes, _ = record_reports(reports + reports[:5])  # five sent twice
    assert outcomes == [None] * (len(reports) + 5)
    outcomes, _ = record_reports([Report(deps[0].device, deps[1].pk, "succeeded")])
    assert "does not exist for this device" in str(outcomes[0])
    assert set(Deployment.objects.filter(release=release).values_list("state", "attempts")) == {
        ("installed", 1)
    }
    from releases.models import DeploymentEvent

    assert DeploymentEvent.objects.filter(deployment__release=release).count() == len(reports)


def test_a_paced_release_rings_its_pending_devices_after_the_gate_and_only_then_completes(fleet):
    release = start_release(
        create_release(
            fleet.version,
            stages=[{"basis_points": 10_000, "success_gate": 0.5}],
            delivery={"notify_rate": 1000},
        )
    )
    total = Deployment.objects.filter(release=release).count()
    pending = Deployment.objects.filter(release=release, state="pending")
    assert pending.count() == total  # paced: the worker rings, not the start
    # Half of the fleet rung and succeeded: the success gate is met.
    for dep in list(pending.select_related("device")[: total // 2 + 1]):
        Deployment.objects.filter(pk=dep.pk).update(state="notified")
        for state in ("downloading", "installed", "succeeded"):
            record_reports([Report(dep.device, dep.pk, state)])
    outcome = evaluate_release(release)
    assert outcome.startswith("finishing")  # not "completed": connected devices still pending
    release.refresh_from_db()
    assert release.state == "running"
    assert not pending.exists()  # every pending device was rung (the rate allows it)
    for dep in Deployment.objects.filter(release=release, state="notified").select_related(
        "device"
    ):
        for state in ("downloading", "installed", "succeeded"):
            record_reports([Report(dep.device, dep.pk, state)])
    assert evaluate_release(release) == "completed"


def test_an_offline_pending_device_does_not_hold_a_release_back(fleet):
    offline = fleet.devices[0]
    Device.objects.filter(pk=offline.pk).update(online=False)
    release = start_release(create_release(fleet.version))
    for dep in Deployment.objects.filter(release=release, state="notified").select_related(
        "device"
    ):
        for state in ("downloading", "installed", "succeeded"):
            record_reports([Report(dep.device, dep.pk, state)])
    assert evaluate_release(release) == "completed"
    # It gets the version when it connects: a completed release still hands it out.
    offline.refresh_from_db()
    [entry] = desired_states([offline])[offline.pk]
    assert entry["release"] == release.pk
    assert Deployment.objects.get(pk=entry["deployment"]).state == "notified"


def test_devices_never_import_releases():
    """Releases build on devices; devices expose hooks instead of importing releases."""
    offenders = []
    for path in (ROOT / "devices").rglob("*.py"):
        if "tests" in path.parts or "migrations" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "releases"]
    assert offenders == []


def test_the_cache_forgets_an_app_when_told(fleet):
    device = Device.objects.filter(app=fleet.app).first()
    desired_states([device])
    generation_before = CACHE._generation.get(fleet.app.pk, 0)
    from devices.push import release_changed_here

    release_changed_here(fleet.app.pk)  # what every process does on a release-changed message
    assert CACHE._generation[fleet.app.pk] == generation_before + 1
    assert fleet.app.pk not in CACHE._apps


def test_a_release_started_where_no_socket_listens_is_rung_by_the_servers_loop(
    fleet, monkeypatch, django_capture_on_commit_callbacks
):
    """The embedded configuration, a release started from a shell: that process's notices
    would reach nobody, so it rings nobody; the devices wait pending and the rollout loop
    in the server process rings them on its next pass."""
    from devices import publish
    from releases.choices import DeploymentState, Step

    rung: list[list[str]] = []
    monkeypatch.setattr(
        "releases.services.publish_notice", lambda notice: rung.append(notice.device_uids)
    )
    monkeypatch.setattr(publish, "IN_SERVER", False)  # a shell: no sockets here
    with django_capture_on_commit_callbacks(execute=True):
        release = start_release(create_release(fleet.version))
    states = set(Deployment.objects.filter(release=release).values_list("state", flat=True))
    assert states == {DeploymentState.PENDING} and rung == []

    monkeypatch.setattr(publish, "IN_SERVER", True)  # the server process's loop
    with django_capture_on_commit_callbacks(execute=True):
        assert evaluate_release(release) == Step.NOTIFIED
    deployments = Deployment.objects.filter(release=release)
    assert {d.state for d in deployments} == {DeploymentState.NOTIFIED}
    assert sorted(uid for uids in rung for uid in uids) == sorted(
        d.device.uid for d in deployments.select_related("device")
    )
