"""The release state machine is one table (releases/choices.ALLOWED_ACTIONS): the services'
guards refuse exactly what it refuses, and the dashboard shows and ships the same table."""

from __future__ import annotations

import json
import re

import pytest
from django.test import Client
from django.urls import reverse

from releases import services
from releases.choices import ALLOWED_ACTIONS, ReleaseAction, ReleaseState
from releases.models import Release

pytestmark = pytest.mark.django_db

VERBS = {
    ReleaseAction.START: services.start_release,
    ReleaseAction.PAUSE: services.pause_release,
    ReleaseAction.RESUME: services.resume_release,
    ReleaseAction.ADVANCE: services.advance_release,
    ReleaseAction.ABORT: services.abort_release,
    ReleaseAction.ROLLBACK: services.rollback_release,
}


def test_every_state_has_a_row_and_every_action_a_verb():
    assert set(ALLOWED_ACTIONS) == set(ReleaseState.values)
    assert set(VERBS) == set(ReleaseAction)


@pytest.mark.parametrize("state", ReleaseState.values)
@pytest.mark.parametrize("action", list(ReleaseAction))
def test_the_service_guard_refuses_exactly_what_the_table_refuses(cast, state, action):
    stages = [{"basis_points": 5000}, {"basis_points": 10_000}]
    release = services.create_release(cast.version, stages=stages)
    Release.objects.filter(pk=release.pk).update(state=state)
    release.refresh_from_db()
    refused = f"cannot {action.label.lower()} release {release.pk}"
    try:
        VERBS[action](release)
    except services.ReleaseError as exc:
        # Allowed actions may still fail for another reason (no version to roll back to).
        assert (refused in str(exc)) is (action not in ALLOWED_ACTIONS[state]), str(exc)
    else:
        assert action in ALLOWED_ACTIONS[state]


@pytest.mark.parametrize("state", ReleaseState.values)
def test_the_dashboard_buttons_and_script_follow_the_table(cast, state):
    release = services.create_release(cast.version)
    Release.objects.filter(pk=release.pk).update(state=state)
    client = Client()
    client.force_login(cast.operator)
    url = reverse("console:release", args=[cast.app.slug, release.pk])
    html = client.get(url).content.decode()
    shown = {
        m.group(1)
        for m in re.finditer(r'<button type="button"[^>]*data-action="(\w+)"(?![^>]*hidden)', html)
    }
    assert shown == set(ALLOWED_ACTIONS[state])
    script = re.search(r'<script id="release-machine" type="application/json">(.*?)</script>', html)
    machine = json.loads(script.group(1))
    assert machine["actions"] == {s: list(a) for s, a in ALLOWED_ACTIONS.items()}
