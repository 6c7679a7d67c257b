"""The data side of a task: the results it collected, and how it runs across the fleet."""

from __future__ import annotations

from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404

from console.access import app_page
from console.queries import keyset_page
from console.views.base import page
from devices.models import Result
from tasks.models import Task
from walle_web.params import ParamError, whole_number


@app_page()
def results_page(request: HttpRequest, app, task_id: int) -> HttpResponse:
    task = get_object_or_404(Task, app=app, pk=task_id)
    version = request.GET.get("version", "").strip()
    device = request.GET.get("device", "").strip()
    error = ""
    qs = Result.objects.filter(app=app, task=task.name).select_related("device")
    try:
        number = whole_number("version", version, minimum=1)
    except ParamError:
        error = "The version is a number, e.g. 3."
        qs = qs.none()
    else:
        if number is not None:
            qs = qs.filter(version=number)
    if device:
        qs = qs.filter(device__uid=device)
    rows = keyset_page(qs, request.GET.get("after"), request.GET.get("before"), size=25, desc=True)
    filters = {k: v for k, v in (("version", version), ("device", device)) if v}
    export = urlencode({"app": app.slug, "task": task.name, **filters})
    return page(
        request,
        "console/tasks/results.html",
        {
            "task": task,
            "page": rows,
            "versions": task.versions.order_by("-number").values_list("number", flat=True),
            "filters": {"version": version, "device": device},
            "query": urlencode(filters),
            "export": export,
            "error": error,
            "nav": "tasks",
        },
        status=400 if error else 200,
    )


@app_page()
def health_page(request: HttpRequest, app, task_id: int) -> HttpResponse:
    task = get_object_or_404(Task, app=app, pk=task_id)
    return page(
        request,
        "console/tasks/health.html",
        {
            "task": task,
            "versions": task.versions.order_by("-number").values_list("number", flat=True),
            "nav": "tasks",
        },
    )
