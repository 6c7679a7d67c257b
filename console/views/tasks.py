"""Tasks: list, create, detail with versions, files, config and diffs; the upload page."""

from __future__ import annotations

import json
import re

from django.contrib import messages
from django.db.models import Count, Max
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect

from accounts.choices import Role
from accounts.permissions import has_role
from console.access import app_page
from console.diffing import diff_versions
from console.views.base import page
from releases.models import Release
from tasks import services
from tasks.models import Task

SLUG = re.compile(r"^[-a-zA-Z0-9_]+$")


@app_page()
def task_list(request: HttpRequest, app) -> HttpResponse:
    errors: dict[str, str] = {}
    form = {"name": "", "scene": "", "description": ""}
    if request.method == "POST":
        if not has_role(request.user, app, Role.OPERATOR):
            return page(
                request,
                "console/403.html",
                {"reason": "Creating a task needs the operator role."},
                status=403,
            )
        form = {k: request.POST.get(k, "").strip() for k in form}
        if not SLUG.match(form["name"]):
            errors["name"] = "Use letters, digits, '-' or '_' (e.g. item-features)."
        elif Task.objects.filter(app=app, name=form["name"]).exists():
            errors["name"] = f"A task called “{form['name']}” already exists in this app."
        if not errors:
            task = services.create_task(
                app,
                name=form["name"],
                scene=form["scene"][:100],
                description=form["description"],
                by=request.user,
            )
            messages.success(request, f"Task {task.name} created. Upload its first version.")
            return redirect("console:version-upload", slug=app.slug, task_id=task.pk)
    tasks = (
        Task.objects.filter(app=app)
        .annotate(n_versions=Count("versions"), latest=Max("versions__number"))
        .order_by("name")
    )
    return page(
        request,
        "console/tasks/list.html",
        {"tasks": tasks, "errors": errors, "form": form, "nav": "tasks"},
        status=400 if errors else 200,
    )


@app_page()
def task_detail(request: HttpRequest, app, task_id: int) -> HttpResponse:
    task = get_object_or_404(Task, app=app, pk=task_id)
    versions = list(task.versions.select_related("created_by", "parent").order_by("-number"))
    by_number = {v.number: v for v in versions}
    selected = None
    if versions:
        wanted = request.GET.get("v", "")
        selected = by_number.get(int(wanted)) if wanted.isdigit() else None
        selected = selected or versions[0]
    diff = None
    diff_error = ""
    a, b = request.GET.get("a", ""), request.GET.get("b", "")
    if a and b:
        old = by_number.get(int(a)) if a.isdigit() else None
        new = by_number.get(int(b)) if b.isdigit() else None
        if old is None or new is None:
            diff_error = "Pick two existing versions to compare."
        else:
            diff = diff_versions(old, new)
    elif len(versions) >= 2:
        a, b = str(versions[1].number), str(versions[0].number)
    releases = Release.objects.filter(task=task).select_related("version").order_by("-id")[:20]
    return page(
        request,
        "console/tasks/detail.html",
        {
            "task": task,
            "versions": versions,
            "selected": selected,
            "diff": diff,
            "diff_error": diff_error,
            "a": a,
            "b": b,
            "releases": releases,
            "nav": "tasks",
        },
    )


@app_page(Role.OPERATOR)
def version_upload(request: HttpRequest, app, task_id: int) -> HttpResponse:
    task = get_object_or_404(Task, app=app, pk=task_id)
    latest = task.versions.order_by("-number").first()
    return page(
        request,
        "console/tasks/upload.html",
        {
            "task": task,
            "latest": latest,
            # Prefill with the previous config: most uploads change code or models, not config.
            "latest_config_json": json.dumps(latest.config, indent=2) if latest else "",
            "nav": "tasks",
        },
    )
