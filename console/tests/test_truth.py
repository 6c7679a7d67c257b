"""The console shows what devices run as their reports say: fleet list, filters, device page,
release pages; a rollback shows on the release it undid and on the devices."""

from __future__ import annotations

import re

import pytest

from console.tests.helpers import login, url
from devices.services import device_hello
from releases.models import Deployment
from releases.reports import record_report
from releases.rollout import evaluate_release
from releases.services import create_release, rollback_release, start_release
from tests.cast import make_version

pytestmark = pytest.mark.django_db


def report(release, devices, *states):
    for dep in Deployment.objects.filter(release=release, device__in=devices).select_related(
        "device"
    ):
        for state in states:
            record_report(dep.device, dep.pk, state)


def fleet_uids(client, cast, query: str) -> set[str]:
    text = client.get(url("fleet", cast) + query).content.decode()
    return set(re.findall(r'<a href="/apps/[^/]+/fleet/(dev-[0-9a-f]+)/">', text))


@pytest.fixture
def rolled(cast):
    """v1 everywhere; v2 reached two devices; it was rolled back and one device switched."""
    r1 = start_release(create_release(cast.version))
    report(r1, cast.devices, "downloading", "installed", "succeeded")
    evaluate_release(r1)
    v2 = make_version(cast.task, b"def run(ctx):\n    return 2\n")
    r2 = start_release(create_release(v2))
    on_v2 = cast.devices[:2]
    report(r2, on_v2, "downloading", "installed", "succeeded")
    # Their hellos still say v1 (they said it when they connected, before v2).
    for d in cast.devices:
        device_hello(d, {}, {cast.task.name: {"version": 1, "digest": "old"}})
    return cast, r2, on_v2


def test_fleet_shows_and_filters_the_reported_version_not_the_hello(rolled):
    cast, _, on_v2 = rolled
    viewer = login(cast.viewer)
    task = cast.task.name
    assert fleet_uids(viewer, cast, f"?task={task}&version=2") == {d.uid for d in on_v2}
    assert fleet_uids(viewer, cast, f"?task={task}&version=1") == {d.uid for d in cast.devices[2:]}
    text = viewer.get(url("fleet", cast)).content.decode()
    assert text.count(f'data-running="{task}" data-version="2"') == 2


def test_a_rollback_shows_on_fleet_device_page_and_the_undone_release(rolled):
    cast, r2, on_v2 = rolled
    never_finished = len(cast.devices) - len(on_v2)  # rolled back before they got v2
    rb = rollback_release(r2, reason="slow")
    viewer = login(cast.viewer)
    ordered = viewer.get(url("fleet", cast)).content.decode()
    assert ordered.count("rolling back to v1") == 2
    report(rb, [on_v2[0]], "installed", "succeeded")
    task = cast.task.name
    assert fleet_uids(viewer, cast, f"?task={task}&rolled_back=yes") == {on_v2[0].uid}
    assert fleet_uids(viewer, cast, f"?task={task}&version=2") == {on_v2[1].uid}
    device_page = viewer.get(url("device", cast, uid=on_v2[0].uid)).content.decode()
    assert "rolled back from v2" in device_page
    dashboard = viewer.get(url("release", cast, release_id=r2.pk)).content.decode()
    rolled_back = never_finished + 1
    assert f'data-count="rolled_back">{rolled_back}<' in dashboard
    assert f'data-count="succeeded">{len(on_v2) - 1}<' in dashboard
    listing = viewer.get(url("releases", cast)).content.decode()
    row = re.search(rf'data-release="{r2.pk}".*?</tr>', listing, re.S).group(0)
    assert f'data-cell="rolled_back">{rolled_back}<' in row


def test_a_device_without_reports_falls_back_to_its_hello(cast):
    device = cast.devices[0]
    device_hello(device, {}, {"other-task": {"version": 3, "digest": "d"}})
    viewer = login(cast.viewer)
    assert fleet_uids(viewer, cast, "?task=other-task&version=3") == {device.uid}
    listing = viewer.get(url("fleet", cast)).content.decode()
    assert re.search(r"other-task v3 <span[^>]*>\(at connect\)", listing)
    page = viewer.get(url("device", cast, uid=device.uid)).content.decode()
    row = re.search(r"<tr><td>other-task</td>.*?</tr>", page).group(0)
    assert "no report" in row and "<td>v3</td>" in row
