"""Every console page, seen by each member of the cast: what they may see and do."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from devices.choices import GroupKind
from devices.models import DeviceGroup
from releases import services as releases
from releases.reports import record_report
from tests.cast import make_version

pytestmark = pytest.mark.django_db


def login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def url(name: str, cast, **kwargs) -> str:
    return reverse(f"console:{name}", kwargs={"slug": cast.app.slug, **kwargs})


def started_release(cast, stages=None):
    release = releases.create_release(
        cast.version,
        stages=stages or [{"basis_points": 5000}, {"basis_points": 10_000}],
        by=cast.operator,
    )
    return releases.start_release(release, by=cast.operator)


def app_pages(cast, release) -> list[str]:
    device = cast.devices[0]
    group = DeviceGroup.objects.create(app=cast.app, name="pixels", kind=GroupKind.DYNAMIC)
    return [
        url("overview", cast),
        url("tasks", cast),
        url("task", cast, task_id=cast.task.pk),
        url("fleet", cast),
        url("device", cast, uid=device.uid),
        url("groups", cast),
        url("group-edit", cast, group_id=group.pk),
        url("releases", cast),
        url("release", cast, release_id=release.pk),
        url("audit", cast),
    ]


def test_anonymous_visitors_are_sent_to_the_login_page(client, cast):
    response = client.get(url("tasks", cast))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("console:login"))


def test_login_page_logs_in_and_lands_on_the_first_app(client, cast):
    assert client.get(reverse("console:login")).status_code == 200
    response = client.post(reverse("console:login"), {"username": "vera", "password": "pw-vera"})
    assert response.status_code == 302
    response = client.get(response["Location"], follow=True)
    assert response.request["PATH_INFO"] == url("overview", cast)


def test_a_wrong_password_says_what_to_check(client, cast):
    response = client.post(reverse("console:login"), {"username": "vera", "password": "nope"})
    assert response.status_code == 200
    assert b"Check the username and password" in response.content


def test_a_viewer_sees_every_page_of_the_app_but_no_operator_controls(cast):
    release = started_release(cast)
    viewer = login(cast.viewer)
    for page in app_pages(cast, release):
        response = viewer.get(page)
        assert response.status_code == 200, page
    dashboard = viewer.get(url("release", cast, release_id=release.pk)).content.decode()
    assert 'data-action="pause"' not in dashboard
    assert "New release" not in viewer.get(url("releases", cast)).content.decode()
    assert viewer.get(url("release-new", cast)).status_code == 403
    assert viewer.get(url("version-upload", cast, task_id=cast.task.pk)).status_code == 403
    assert viewer.get(url("settings", cast)).status_code == 403


def test_an_operator_gets_the_wizard_upload_and_action_buttons(cast):
    release = started_release(cast)
    operator = login(cast.operator)
    assert operator.get(url("release-new", cast)).status_code == 200
    assert operator.get(url("version-upload", cast, task_id=cast.task.pk)).status_code == 200
    dashboard = operator.get(url("release", cast, release_id=release.pk)).content.decode()
    assert 'data-action="pause"' in dashboard and 'data-action="rollback"' in dashboard
    assert operator.get(url("settings", cast)).status_code == 403


def test_an_admin_manages_members_and_enrollment_keys(cast):
    admin = login(cast.admin)
    assert admin.get(url("settings", cast)).status_code == 200
    response = admin.post(url("settings", cast), {"what": "key", "label": "qa"})
    assert response.status_code == 200 and b"wek_" in response.content
    response = admin.post(
        url("settings", cast), {"what": "member", "username": "oscar", "role": "viewer"}
    )
    assert response.status_code == 302
    assert login(cast.outsider).get(url("tasks", cast)).status_code == 200
    removed = admin.post(url("settings", cast), {"what": "remove", "username": "oscar"})
    assert removed.status_code == 302
    assert login(cast.outsider).get(url("tasks", cast)).status_code in (403, 404)


def test_the_last_admin_of_an_app_cannot_be_removed(cast):
    admin = login(cast.admin)
    response = admin.post(url("settings", cast), {"what": "remove", "username": "ada"}, follow=True)
    assert "last admin" in response.content.decode()
    assert admin.get(url("settings", cast)).status_code == 200  # still an admin


def test_an_outsider_of_another_app_sees_nothing_of_this_one(cast):
    release = started_release(cast)
    outsider = login(cast.outsider)
    for page in app_pages(cast, release):
        response = outsider.get(page)
        assert response.status_code == 403, page
        assert cast.task.name.encode() not in response.content
    assert (
        outsider.post(url("group-match", cast), "{}", content_type="application/json").status_code
        == 403
    )
    # Their own app is there, and the switcher does not offer ours.
    home = outsider.get(reverse("console:home"), follow=True).content.decode()
    assert "maps-ios" in home and "shop-android" not in home


def test_an_operator_creates_a_task_and_is_sent_to_upload(cast):
    operator = login(cast.operator)
    response = operator.post(url("tasks", cast), {"name": "ranker", "scene": "feed"})
    assert response.status_code == 302 and "/upload/" in response["Location"]
    bad = operator.post(url("tasks", cast), {"name": "has space"})
    assert bad.status_code == 400 and b"Use letters" in bad.content
    assert login(cast.viewer).post(url("tasks", cast), {"name": "x"}).status_code == 403


def test_task_detail_diffs_text_files_and_config_and_lists_binaries(cast):
    make_version(
        cast.task,
        source=b"def run(ctx):\n    return 43\n",
        config={"params": {"k": 2}},
        model__bin=b"\x00\x01binary",
    )
    page = login(cast.viewer).get(url("task", cast, task_id=cast.task.pk) + "?a=1&b=2")
    text = page.content.decode()
    assert page.status_code == 200
    assert "+    return 43" in text
    assert "model.bin" in text and "binary or large file" in text
    assert "&quot;k&quot;: 2" in text or '"k": 2' in text


def test_fleet_filters_and_pages_without_counting(cast):
    viewer = login(cast.viewer)
    with CaptureQueriesContext(connection) as queries:
        response = viewer.get(url("fleet", cast) + "?model=Pixel*&online=no")
    assert response.status_code == 200
    text = response.content.decode()
    pixel = next(d for d in cast.devices if d.model.startswith("Pixel"))
    galaxy = next(d for d in cast.devices if d.model.startswith("Galaxy"))
    assert pixel.uid in text and galaxy.uid not in text
    device_queries = [q["sql"] for q in queries if 'FROM "devices_device"' in q["sql"]]
    assert not any("COUNT(" in sql for sql in device_queries)  # 100k devices: never count
    assert len(queries) < 20


def test_fleet_keyset_pages_walk_forward_and_back(cast, monkeypatch):
    monkeypatch.setattr("console.queries.PAGE_SIZE", 2)
    monkeypatch.setattr("console.views.fleet.keyset_page.__defaults__", (2, False))
    viewer = login(cast.viewer)
    first = viewer.get(url("fleet", cast)).context["page"]
    assert [d.uid for d in first.rows] == [d.uid for d in cast.devices[:2]]
    second = viewer.get(url("fleet", cast) + f"?after={first.after}").context["page"]
    assert [d.uid for d in second.rows] == [d.uid for d in cast.devices[2:4]]
    back = viewer.get(url("fleet", cast) + f"?before={second.rows[0].id}").context["page"]
    assert [d.uid for d in back.rows] == [d.uid for d in cast.devices[:2]]


def test_group_editor_counts_matches_live_and_saves(cast):
    operator = login(cast.operator)
    match = operator.post(
        url("group-match", cast),
        json.dumps({"filter": {"models": ["Pixel*"]}}),
        content_type="application/json",
    )
    assert match.status_code == 200 and match.json()["count"] == 1
    bad = operator.post(
        url("group-match", cast),
        json.dumps({"filter": {"colour": "red"}}),
        content_type="application/json",
    )
    assert bad.status_code == 400 and "unknown target filter" in bad.json()["errors"][0]
    saved = operator.post(
        url("group-new", cast),
        {"name": "pixels", "kind": "dynamic", "filter": '{"models": ["Pixel*"]}'},
    )
    assert saved.status_code == 302
    group = DeviceGroup.objects.get(app=cast.app, name="pixels")
    assert group.filter == {"models": ["Pixel*"]}
    assert cast.app.audit_entries.filter(action="group.create").exists()
    static = operator.post(
        url("group-new", cast),
        {"name": "qa", "kind": "static", "filter": "{}", "members": cast.devices[0].uid + "\nnope"},
    )
    assert static.status_code == 400 and b"Not devices of this app: nope" in static.content
    assert (
        login(cast.viewer).post(url("group-new", cast), {"name": "v", "kind": "static"}).status_code
        == 403
    )


def test_release_list_and_dashboard_show_counts_and_failures(cast):
    release = started_release(cast, stages=[{"basis_points": 10_000}])
    deployment = release.deployments.first()
    record_report(deployment.device, deployment.pk, "downloading")
    record_report(
        deployment.device, deployment.pk, "failed", error_code="oom", error="out of memory"
    )
    viewer = login(cast.viewer)
    listing = viewer.get(url("releases", cast)).content.decode()
    assert f"#{release.pk}" in listing
    dashboard = viewer.get(url("release", cast, release_id=release.pk)).content.decode()
    assert "oom" in dashboard and "out of memory" in dashboard
    assert deployment.device.uid in dashboard  # a sample device of the failure
    # The other devices were offline at the start: admitted, not rung yet, and shown so.
    pending = len(cast.devices) - 1
    assert f"<span data-stage-pending>{pending}</span> not rung yet" in dashboard
    assert 'data-count="failed">1<' in dashboard


def test_audit_log_lists_what_happened(cast):
    started_release(cast)
    text = login(cast.viewer).get(url("audit", cast) + "?action=release.").content.decode()
    assert "release.start" in text and "task.create" not in text


def test_api_token_page_creates_rotates_and_revokes_one_token(cast):
    from rest_framework.authtoken.models import Token

    viewer = login(cast.viewer)
    assert viewer.get(reverse("console:tokens")).status_code == 200
    first = viewer.post(reverse("console:tokens"), {"action": "create"}).context["new_key"]
    second = viewer.post(reverse("console:tokens"), {"action": "create"}).context["new_key"]
    assert first != second
    assert list(Token.objects.filter(user=cast.viewer).values_list("key", flat=True)) == [second]
    viewer.post(reverse("console:tokens"), {"action": "revoke"})
    assert not Token.objects.filter(user=cast.viewer).exists()


def test_a_user_without_apps_gets_an_empty_state(db):
    from tests.cast import make_user

    lonely = login(make_user("lonely"))
    response = lonely.get(reverse("console:home"))
    assert response.status_code == 200 and b"not in any app" in response.content


def test_staff_create_apps_and_become_their_admin(cast):
    from accounts.models import App
    from tests.cast import make_user

    staff = login(make_user("stella", is_staff=True))
    response = staff.post(reverse("console:app-new"), {"slug": "news-ios", "name": "News"})
    assert response.status_code == 302
    app = App.objects.get(slug="news-ios")
    assert response["Location"] == reverse("console:settings", kwargs={"slug": app.slug})
    assert staff.post(reverse("console:app-new"), {"slug": "news-ios"}).status_code == 400
    assert login(cast.operator).get(reverse("console:app-new")).status_code == 403


def test_a_draft_release_offers_start_and_abort_to_operators(cast):
    release = releases.create_release(cast.version, by=cast.operator)
    page = login(cast.operator).get(url("release", cast, release_id=release.pk)).content.decode()
    assert 'data-action="start"' in page
    assert 'data-action="abort"' in page and 'data-action="abort" hidden' not in page
    assert 'data-action="pause" hidden' in page
