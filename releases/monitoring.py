"""Read-only aggregates of releases for the API and the console."""

from __future__ import annotations

import statistics

from django.db import connection
from django.db.models import CharField, Count, F, Func, Value
from django.db.models.functions import TruncMinute

from devices.models import RunStat
from devices.targeting import reached_devices
from releases.choices import DeploymentState
from releases.models import Deployment, DeploymentEvent, Release

FAILURE_STATES = (DeploymentState.FAILED, DeploymentState.TIMED_OUT)


def deployment_counts(release: Release) -> dict[str, int]:
    counts = {state: 0 for state in DeploymentState.values}
    for row in release.deployments.values("state").annotate(n=Count("id")).order_by():
        counts[row["state"]] = row["n"]
    counts["total"] = sum(counts[s] for s in DeploymentState.values)
    return counts


def _rates(counts: dict[str, int]) -> dict[str, float | None]:
    finished = counts.get("succeeded", 0) + counts.get("failed", 0) + counts.get("timed_out", 0)
    total = counts.get("total", 0)
    return {
        "success_rate": counts.get("succeeded", 0) / total if total else None,
        "failure_rate": (counts.get("failed", 0) + counts.get("timed_out", 0)) / finished
        if finished
        else None,
    }


def stage_breakdown(release: Release) -> list[dict]:
    per_stage: dict[int, dict[str, int]] = {}
    for row in release.deployments.values("stage", "state").annotate(n=Count("id")).order_by():
        stage = per_stage.setdefault(row["stage"], {s: 0 for s in DeploymentState.values})
        stage[row["state"]] = row["n"]
    result = []
    for index, stage in enumerate(release.stages or [{"basis_points": 10_000}]):
        counts = per_stage.get(index, {s: 0 for s in DeploymentState.values})
        counts["total"] = sum(counts.values())
        result.append(
            {
                "stage": index + 1,
                "basis_points": stage["basis_points"],
                "counts": counts,
                **_rates(counts),
            }
        )
    return result


def time_series(release: Release) -> list[dict]:
    """Transitions per minute and state: [{"minute": iso, "state": s, "count": n}, ...]."""
    if connection.vendor == "sqlite":
        # TruncMinute runs a Python function per row on SQLite (6x slower at 270k events,
        # bench/rollout.py); strftime is native. Times are stored in UTC.
        minute = Func(
            Value("%Y-%m-%dT%H:%M:00+00:00"), F("at"), function="strftime", output_field=CharField()
        )
    else:
        minute = TruncMinute("at")
    rows = (
        DeploymentEvent.objects.filter(deployment__release=release)
        .annotate(minute=minute)
        .values("minute", "state")
        .annotate(count=Count("id"))
        .order_by("minute", "state")
    )
    return [
        {
            "minute": r["minute"] if isinstance(r["minute"], str) else r["minute"].isoformat(),
            "state": r["state"],
            "count": r["count"],
        }
        for r in rows
    ]


def failure_reasons(release: Release, limit: int = 5, samples: int = 5) -> list[dict]:
    rows = (
        Deployment.objects.filter(release=release, state__in=FAILURE_STATES)
        .values("error_code", "device__model")
        .annotate(count=Count("id"))
        .order_by("-count", "error_code")[:limit]
    )
    result = []
    for row in rows:
        sample = Deployment.objects.filter(
            release=release,
            state__in=FAILURE_STATES,
            error_code=row["error_code"],
            device__model=row["device__model"],
        ).select_related("device")[:samples]
        result.append(
            {
                "error_code": row["error_code"] or "timed_out",
                "model": row["device__model"],
                "count": row["count"],
                "message": next((d.error_message for d in sample if d.error_message), ""),
                "sample_devices": [d.device.uid for d in sample],
            }
        )
    return result


def _run_metrics(stats: list[RunStat]) -> dict:
    runs = sum(s.runs for s in stats)
    errors = sum(s.errors for s in stats)
    p50s = [s.latency_ms_p50 for s in stats if s.latency_ms_p50 is not None]
    p95s = [s.latency_ms_p95 for s in stats if s.latency_ms_p95 is not None]
    return {
        "devices": len({s.device_id for s in stats}),
        "runs": runs,
        "errors": errors,
        "error_rate": errors / runs if runs else None,
        # Medians of the devices' own percentiles: an estimate, exact percentiles need raw samples.
        "latency_ms_p50": statistics.median(p50s) if p50s else None,
        "latency_ms_p95": statistics.median(p95s) if p95s else None,
    }


def run_metrics(release: Release) -> dict:
    """Task run metrics of devices on the new version next to an automatic control group:
    devices of the same target that still run another version of the task."""
    since = release.started_at or release.created_at
    in_release = set(
        release.deployments.filter(state=DeploymentState.SUCCEEDED).values_list(
            "device_id", flat=True
        )
    )
    new = list(
        RunStat.objects.filter(
            task=release.task.name,
            version=release.version.number,
            device_id__in=in_release,
            received_at__gte=since,
        )
    )
    control_ids = {d.id for d in reached_devices(release.app_id, release.target)} - in_release
    control = list(
        RunStat.objects.filter(
            task=release.task.name, device_id__in=control_ids, received_at__gte=since
        ).exclude(version=release.version.number)
    )
    return {"new": _run_metrics(new), "control": _run_metrics(control)}


def release_monitoring(release: Release) -> dict:
    counts = deployment_counts(release)
    return {
        "release": release.pk,
        "state": release.state,
        "reason": release.reason,
        "current_stage": release.current_stage + 1,
        "counts": counts,
        **_rates(counts),
        "stages": stage_breakdown(release),
        "time_series": time_series(release),
        "failure_reasons": failure_reasons(release),
        "run_metrics": run_metrics(release),
    }
