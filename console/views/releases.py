"""Releases: list, the wizard and the live dashboard (their data comes from the REST API)."""

from __future__ import annotations

import secrets

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404

from accounts.choices import Role
from console.access import app_page
from console.queries import counts_for_releases, keyset_page
from console.views.base import page
from devices.models import DeviceGroup
from devices.targeting import TARGET_KEYS
from releases import compare, gates, monitoring, policy
from releases.choices import (
    ALLOWED_ACTIONS,
    FAILED_DEPLOYMENT_STATES,
    IN_FLIGHT_DEPLOYMENT_STATES,
    ROLLING_OUT_STATES,
    DeploymentState,
    ReleaseState,
)
from releases.models import Release
from tasks.models import Task


def state_machine() -> dict:
    """The release state machine and deployment state groups, as the dashboard's JavaScript
    reads them (json_script): the same tables the services' guards use."""
    return {
        "actions": {state: list(actions) for state, actions in ALLOWED_ACTIONS.items()},
        "rolling_out": list(ROLLING_OUT_STATES),
        "deployment_states": list(DeploymentState.values),
        "in_flight": list(IN_FLIGHT_DEPLOYMENT_STATES),
        "failed": list(FAILED_DEPLOYMENT_STATES),
    }


@app_page()
def release_list(request: HttpRequest, app) -> HttpResponse:
    qs = Release.objects.filter(app=app).select_related("task", "version", "created_by")
    state = request.GET.get("state", "")
    if state in ReleaseState.values:
        qs = qs.filter(state=state)
    task = request.GET.get("task", "")
    if task:
        qs = qs.filter(task__name=task)
    result = keyset_page(qs, request.GET.get("after"), request.GET.get("before"), desc=True)
    counts = counts_for_releases([r.pk for r in result.rows])
    for r in result.rows:
        r.state_counts = counts[r.pk]
    return page(
        request,
        "console/releases/list.html",
        {
            "page": result,
            "state": state,
            "task": task,
            "states": ReleaseState.choices,
            "tasks": Task.objects.filter(app=app).values_list("name", flat=True),
            "nav": "releases",
        },
    )


@app_page(Role.OPERATOR)
def release_new(request: HttpRequest, app) -> HttpResponse:
    tasks = []
    for task in Task.objects.filter(app=app).prefetch_related("versions").order_by("name"):
        versions = sorted(task.versions.all(), key=lambda v: -v.number)
        tasks.append(
            {
                "id": task.pk,
                "name": task.name,
                "versions": [
                    {
                        "id": v.pk,
                        "number": v.number,
                        "notes": v.notes,
                        "created_at": v.created_at.isoformat(),
                    }
                    for v in versions
                ],
            }
        )
    groups = [
        {"id": g.pk, "name": g.name, "kind": g.kind}
        for g in DeviceGroup.objects.filter(app=app).order_by("name")
    ]
    preselect = request.GET.get("version", "")
    return page(
        request,
        "console/releases/wizard.html",
        {
            "wizard": {
                "app": app.slug,
                "tasks": tasks,
                "groups": groups,
                "salt": secrets.token_hex(8),
                "preselect": int(preselect) if preselect.isdigit() else None,
                "target_keys": sorted(TARGET_KEYS),
                "stage_defaults": policy.STAGE_DEFAULTS,
            },
            "nav": "releases",
        },
    )


@app_page()
def release_dashboard(request: HttpRequest, app, release_id: int) -> HttpResponse:
    release = get_object_or_404(
        Release.objects.select_related("task", "version", "rollback_of", "created_by"),
        app=app,
        pk=release_id,
    )
    versions = list(release.task.versions.order_by("-number").values("id", "number"))
    explain = gates.explain(release)
    stages = stages_with_counts(release)
    for stage, why in zip(stages, explain["stages"], strict=False):
        stage["why"] = why
    return page(
        request,
        "console/releases/dashboard.html",
        {
            "release": release,
            "counts": monitoring.deployment_counts(release),
            "stages": stages,
            "explain": explain,
            "running": monitoring.running_now(release),
            "compare_labels": compare.labels(release, []),
            "failures": monitoring.failure_reasons(release),
            "actions": ALLOWED_ACTIONS[release.state],
            "machine": state_machine(),
            "deployment_states": DeploymentState.values,
            "count_tiles": [*DeploymentState.values, "total"],
            "in_flight": ",".join(IN_FLIGHT_DEPLOYMENT_STATES),
            "failed_states": ",".join(FAILED_DEPLOYMENT_STATES),
            "versions": versions,
            "rollbacks": release.rollbacks.order_by("-id")[:5],
            "nav": "releases",
        },
    )


def stages_with_counts(release: Release) -> list[dict]:
    """Each stage's policy (share, gates) next to its deployment counts."""
    policies = release.stages or [{"basis_points": 10_000}]
    return [
        {**policy, **row, "index": i}
        for i, (policy, row) in enumerate(
            zip(policies, monitoring.stage_breakdown(release), strict=False)
        )
    ]
