"""The fleet: filtered, keyset-paged device list; device detail; device groups."""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib import messages
from django.db.models import Count
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.http import require_POST

from accounts.choices import Role
from console.access import app_page, forbidden
from console.queries import (
    FLEET_FILTERS,
    filter_fleet,
    fleet_choices,
    keyset_page,
    match_summary,
    running_versions,
    versions_of,
)
from console.views.base import page, read_json
from devices.choices import GroupKind
from devices.models import Device, DeviceGroup, RunStat
from devices.services import GroupError, retire_device, save_group
from releases import models as release_models
from releases.models import DeploymentEvent
from tasks.models import Task, TaskVersion
from walle_device.protocol import loads_strict


@app_page()
def fleet(request: HttpRequest, app) -> HttpResponse:
    params = request.GET
    qs = filter_fleet(app, params).only(
        "id",
        "uid",
        "model",
        "os",
        "os_version",
        "app_version",
        "region",
        "tags",
        "online",
        "last_seen",
        "current",
    )
    result = keyset_page(qs, params.get("after"), params.get("before"))
    running = running_versions([d.pk for d in result.rows])
    for d in result.rows:
        d.versions = versions_of(d, running[d.pk])
    filters = {k: params.get(k, "") for k in FLEET_FILTERS}
    query = urlencode({k: v for k, v in filters.items() if v})
    return page(
        request,
        "console/fleet/list.html",
        {
            "page": result,
            "filters": filters,
            "filtered": bool(query),
            "query": query,
            "choices": fleet_choices(app),
            "tasks": Task.objects.filter(app=app).values_list("name", flat=True),
            "nav": "fleet",
        },
    )


@app_page()
def device_detail(request: HttpRequest, app, uid: str) -> HttpResponse:
    device = get_object_or_404(Device, app=app, uid=uid)
    deployments = list(
        device.deployments.select_related("release", "release__task", "release__version").order_by(
            "-id"
        )[:50]
    )
    events: dict[int, list] = {}
    for event in DeploymentEvent.objects.filter(deployment__in=deployments).order_by("at", "id"):
        events.setdefault(event.deployment_id, []).append(event)
    for d in deployments:
        d.history = events.get(d.pk, [])
    hello = device.current or {}
    versions_now = [
        dict(
            v,
            hello_version=(hello.get(v["task"]) or {}).get("version"),
            digest=(hello.get(v["task"]) or {}).get("digest", ""),
        )
        for v in versions_of(device, running_versions([device.pk])[device.pk])
    ]
    pin_model = getattr(release_models, "Pin", None)
    pins = (
        list(pin_model.objects.filter(device=device).select_related("task", "version"))
        if pin_model
        else []
    )
    versions = (
        TaskVersion.objects.filter(task__app=app)
        .select_related("task")
        .order_by("task__name", "-number")[:200]
    )
    return page(
        request,
        "console/fleet/device.html",
        {
            "device": device,
            "deployments": deployments,
            "groups": device.groups.all(),
            "run_stats": RunStat.objects.filter(device=device).order_by("-received_at")[:20],
            "pins": pins,
            "versions_now": versions_now,
            "pins_supported": pin_model is not None,
            "versions": versions,
            "nav": "fleet",
        },
    )


@require_POST
@app_page(Role.ADMIN)
def device_retire(request: HttpRequest, app, uid: str) -> HttpResponse:
    """Revoke a device's token (app admins): its sockets close, its history stays."""
    device = get_object_or_404(Device, app=app, uid=uid)
    retire_device(device, by=request.user)
    messages.success(
        request, f"Device {device.uid} retired: its token no longer works and it was disconnected."
    )
    return redirect("console:device", slug=app.slug, uid=device.uid)


@app_page()
def group_list(request: HttpRequest, app) -> HttpResponse:
    groups = DeviceGroup.objects.filter(app=app).annotate(n_members=Count("members"))
    return page(request, "console/groups/list.html", {"groups": groups, "nav": "groups"})


@app_page()
def group_edit(request: HttpRequest, app, group_id: int | None = None) -> HttpResponse:
    group = get_object_or_404(DeviceGroup, app=app, pk=group_id) if group_id else None
    errors: dict[str, str] = {}
    form = {
        "name": group.name if group else "",
        "kind": group.kind if group else GroupKind.DYNAMIC,
        "filter": group.filter if group else {},
        "members": "\n".join(group.members.values_list("uid", flat=True)) if group else "",
    }
    if request.method == "POST":
        if request.console_role not in (Role.OPERATOR, Role.ADMIN):
            return forbidden(request, "Saving a device group needs the operator role.")
        try:
            filter_value = loads_strict(request.POST.get("filter") or "{}")
        except ValueError:
            filter_value = None
        form = {
            "name": request.POST.get("name", ""),
            "kind": request.POST.get("kind", ""),
            "filter": filter_value if isinstance(filter_value, dict) else {},
            "members": request.POST.get("members", ""),
        }
        if not isinstance(filter_value, dict):
            errors["filter"] = "The filter must be a JSON object."
        else:
            try:
                group = save_group(
                    app,
                    group=group,
                    name=form["name"],
                    kind=form["kind"],
                    filter=filter_value,
                    member_uids=form["members"].split(),
                    by=request.user,
                )
            except GroupError as exc:
                errors = exc.errors
            else:
                messages.success(request, f"Group “{group.name}” saved.")
                return redirect("console:group-edit", slug=app.slug, group_id=group.pk)
    return page(
        request,
        "console/groups/edit.html",
        {"group": group, "form": form, "errors": errors, "kinds": GroupKind, "nav": "groups"},
        status=400 if errors else 200,
    )


@require_POST
@app_page()
def group_match(request: HttpRequest, app) -> JsonResponse:
    """Live match count of a filter while it is edited (read-only, any member)."""
    body, error = read_json(request)
    if error:
        return error
    summary = match_summary(app, body.get("filter") or {})
    return JsonResponse(summary, status=400 if "errors" in summary else 200)
