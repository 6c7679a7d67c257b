"""The data side of a task: how fast its results arrive, and how it runs across the fleet."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import QuerySet
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import App
from accounts.permissions import visible_apps
from devices import health
from devices.models import Result
from tasks.models import Task
from walle_web.params import ParamError, whole_number
from walle_web.timerange import RangeError, TimeRange, parse_range

DEFAULT_WINDOW = timedelta(hours=1)


def task_of(request) -> tuple[App, Task]:
    """`?app=<slug>&task=<name or id>` of an app the user belongs to, or a 400 that says so."""
    params = request.query_params
    app = visible_apps(request.user).filter(slug=params.get("app", "")).first()
    if app is None:
        raise ValidationError({"app": ["give ?app=<slug> of an app you belong to"]})
    name = params.get("task", "")
    tasks = Task.objects.filter(app=app)
    task = tasks.filter(name=name).first() or (
        tasks.filter(pk=int(name)).first() if name.isdigit() else None
    )
    if task is None:
        raise ValidationError({"task": [f"no task {name!r} in app {app.slug!r}; give its name"]})
    return app, task


def window_of(request) -> TimeRange:
    try:
        return parse_range(request.query_params, default_since=timezone.now() - DEFAULT_WINDOW)
    except RangeError as exc:
        raise ValidationError({exc.param: [str(exc)]}) from None


def version_of(request) -> int | None:
    try:
        return whole_number(
            "version",
            request.query_params.get("version"),
            minimum=1,
            hint="version is a version number, e.g. 3",
        )
    except ParamError as exc:
        raise ValidationError({exc.param: [str(exc)]}) from None


def filter_results(qs: QuerySet, version: int | None, device: str) -> QuerySet:
    if version is not None:
        qs = qs.filter(version=version)
    if device:
        qs = qs.filter(device__uid=device)
    return qs


class ResultRateView(APIView):
    """Results of a task arriving over time: `?app=&task=` (name or id), optional `version`,
    `device` (uid), and the window `since`/`until`/`step` (default: the last hour)."""

    @extend_schema(responses={200: dict})
    def get(self, request):
        app, task = task_of(request)
        rng = window_of(request)
        qs = filter_results(
            Result.objects.filter(
                app=app, task=task.name, received_at__gte=rng.since, received_at__lte=rng.until
            ),
            version_of(request),
            request.query_params.get("device", "").strip(),
        )
        counts = [0] * rng.buckets()
        for at in qs.values_list("received_at", flat=True).iterator(chunk_size=5000):
            i = rng.bucket_of(at)
            if 0 <= i < len(counts):
                counts[i] += 1
        return Response(
            {
                **rng.as_dict(),
                "task": task.name,
                "t": [rng.bucket_start(i) for i in range(rng.buckets())],
                "results": counts,
                "total": sum(counts),
                "per_minute": sum(counts) / max(1e-9, (rng.until - rng.since).total_seconds()) * 60,
            }
        )


class RunHealthView(APIView):
    """How a task runs across the fleet, from the devices' run_stats: per version, runs,
    errors, error rate and latency p50/p95 over the window and per time bucket.
    `?app=&task=` (name or id), optional `version`, and `since`/`until`/`step`."""

    @extend_schema(responses={200: dict})
    def get(self, request):
        app, task = task_of(request)
        rng = window_of(request)
        version = version_of(request)
        stats, truncated = health.load(app.pk, task.name, rng.since, rng.until)
        if version is not None:
            stats = [s for s in stats if s.version == version]
        by_version: dict[int, list] = {}
        for s in stats:
            by_version.setdefault(s.version, []).append(s)
        series = health.series(stats, rng, key=lambda s: s.version)
        return Response(
            {
                **rng.as_dict(),
                "task": task.name,
                "total": health.summarize(stats),
                "versions": [
                    {"version": v, **health.summarize(rows)}
                    for v, rows in sorted(by_version.items(), reverse=True)
                ],
                "t": [rng.bucket_start(i) for i in range(rng.buckets())],
                "series": [
                    {"version": v, **cols} for v, cols in sorted(series.items(), reverse=True)
                ],
                "truncated": truncated,
            }
        )
