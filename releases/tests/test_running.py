"""What devices run comes from their reports, not their last hello; rollbacks show everywhere."""

from __future__ import annotations

import pytest

from devices.services import device_hello
from releases import running
from releases.choices import RunningState
from releases.models import Deployment, Release, RunningVersion
from releases.monitoring import deployment_counts
from releases.reports import record_report
from releases.rollout import evaluate_release
from releases.services import create_release, rollback_release, start_release
from tests.cast import make_version

pytestmark = pytest.mark.django_db

V2 = b"def run(ctx):\n    return 2\n"


def report_all(release: Release, *states: str, only=None) -> None:
    for dep in Deployment.objects.filter(release=release).select_related("device"):
        if only is not None and dep.device not in only:
            continue
        for state in states:
            record_report(
                dep.device,
                dep.pk,
                state,
                error_code="run_failed" if state == "failed" else "",
                error="boom" if state == "failed" else "",
            )


def running_of(device, task) -> RunningVersion | None:
    return RunningVersion.objects.filter(device=device, task=task).first()


@pytest.fixture
def shipped(cast):
    """v1 completed on every device, then v2 released to all of them."""
    v1 = cast.version
    r1 = start_release(create_release(v1))
    report_all(r1, "downloading", "installed", "succeeded")
    assert evaluate_release(r1) == "completed"
    v2 = make_version(cast.task, V2)
    r2 = start_release(create_release(v2))
    return cast, v1, v2, r1, r2


def test_a_hello_alone_says_nothing_about_what_a_device_runs(cast):
    device = cast.devices[0]
    device_hello(device, {}, {cast.task.name: {"version": 7, "digest": "x"}})
    assert running_of(device, cast.task) is None


def test_activation_then_success_moves_the_device_to_the_new_version(shipped):
    cast, v1, v2, _, r2 = shipped
    device = cast.devices[0]
    assert running_of(device, cast.task).version == v1
    dep = Deployment.objects.get(release=r2, device=device)
    record_report(device, dep.pk, "downloading")
    assert running_of(device, cast.task).version == v1  # downloading is not running
    record_report(device, dep.pk, "installed")
    row = running_of(device, cast.task)
    assert (row.version, row.state, row.previous_version) == (v2, RunningState.ACTIVATED, v1)
    record_report(device, dep.pk, "succeeded")
    row = running_of(device, cast.task)
    assert (row.version, row.state, row.release_id) == (v2, RunningState.SUCCEEDED, r2.pk)


def test_a_failed_download_leaves_the_old_version_and_a_failed_run_shows_failing(shipped):
    cast, v1, v2, _, r2 = shipped
    a, b = cast.devices[:2]
    dep_a = Deployment.objects.get(release=r2, device=a)
    record_report(a, dep_a.pk, "downloading")
    record_report(a, dep_a.pk, "failed", error_code="download_failed", error="404")
    assert (running_of(a, cast.task).version, running_of(a, cast.task).state) == (
        v1,
        RunningState.SUCCEEDED,
    )
    dep_b = Deployment.objects.get(release=r2, device=b)
    for state in ("downloading", "installed"):
        record_report(b, dep_b.pk, state)
    record_report(b, dep_b.pk, "failed", error_code="run_failed", error="boom")
    assert (running_of(b, cast.task).version, running_of(b, cast.task).state) == (
        v2,
        RunningState.FAILED,
    )


def test_a_rollback_shows_on_the_devices_and_on_the_release_it_undid(shipped):
    cast, v1, v2, _, r2 = shipped
    ok, broken, *rest = cast.devices
    report_all(r2, "downloading", "installed", "succeeded", only=[ok, *rest])
    report_all(r2, "downloading", "installed", "failed", only=[broken])
    rb = rollback_release(r2, reason="v2 is slower")
    # Ordered, not yet done: every device of r2 on v2 is expected to switch back.
    for device in cast.devices:
        row = running_of(device, cast.task)
        assert (row.version, row.rollback_to) == (v2, v1)
    assert deployment_counts(Release.objects.get(pk=r2.pk))["rolled_back"] == 0
    report_all(rb, "downloading", "installed", "succeeded")
    for device in cast.devices:
        row = running_of(device, cast.task)
        assert (row.version, row.state, row.previous_version, row.rollback_to) == (
            v1,
            RunningState.ROLLED_BACK,
            v2,
            None,
        )
    counts = deployment_counts(Release.objects.get(pk=r2.pk))
    # The devices that had v2 running fine left it; the failure stays in the history.
    assert counts["rolled_back"] == len(cast.devices) - 1
    assert counts["failed"] == 1 and counts["succeeded"] == 0
    dep = Deployment.objects.get(release=r2, device=ok)
    assert dep.events.filter(state="rolled_back", source="server").get().message == (
        f"switched back to v1 by release #{rb.pk}"
    )


def test_a_device_that_never_left_the_old_version_is_not_called_rolled_back(shipped):
    cast, v1, _, _, r2 = shipped
    device = cast.devices[0]
    rb = rollback_release(r2)
    dep = Deployment.objects.get(release=rb, device=device)
    for state in ("installed", "succeeded"):
        record_report(device, dep.pk, state)
    row = running_of(device, cast.task)
    assert (row.version, row.state) == (v1, RunningState.SUCCEEDED)


def test_transitions_apply_in_bulk_as_they_do_one_by_one(shipped):
    cast, _, v2, _, r2 = shipped
    deps = list(Deployment.objects.filter(release=r2).order_by("id"))
    # What a batched ingest path does: move the deployments, then one call for the batch.
    Deployment.objects.filter(release=r2).update(state="succeeded")
    changed = running.apply_running_version(
        [running.Transition(d.pk, s) for d in deps for s in ("installed", "succeeded")]
        + [running.Transition(deps[0].pk, "failed")]
    )
    assert changed == len(deps)
    rows = {r.device_id: r for r in RunningVersion.objects.filter(task=cast.task)}
    assert {r.version_id for r in rows.values()} == {v2.pk}
    assert rows[deps[0].device_id].state == RunningState.FAILED
    assert {rows[d.device_id].state for d in deps[1:]} == {RunningState.SUCCEEDED}
