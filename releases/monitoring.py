"""Read-only aggregates of releases for the API and the console."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import connection
from django.db.models import CharField, Count, F, Func, QuerySet, Value
from django.db.models.functions import TruncMinute

from releases import compare, gates
from releases.choices import FAILED_DEPLOYMENT_STATES, DeploymentState
from releases.models import Deployment, DeploymentEvent, Release, RunningVersion
from walle_web.params import ParamError, whole_number


def filter_deployments(qs: QuerySet, state: str = "", stage: str = "") -> QuerySet:
    """Narrow a release's deployments by state (one, or several comma separated) and stage
    (1-based, as the console numbers stages)."""
    if state:
        states = [s.strip() for s in state.split(",") if s.strip()]
        unknown = [s for s in states if s not in DeploymentState.values]
        if unknown:
            raise ParamError(
                "state",
                f"unknown deployment state {', '.join(unknown)}; use one or more of "
                f"{', '.join(DeploymentState.values)} (comma separated)",
            )
        qs = qs.filter(state__in=states)
    number = whole_number(
        "stage", stage, minimum=1, maximum=1000, hint="stage is a stage number: 1 for the first"
    )
    if number is not None:
        qs = qs.filter(stage=number - 1)
    return qs


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
        Deployment.objects.filter(release=release, state__in=FAILED_DEPLOYMENT_STATES)
        .values("error_code", "device__model")
        .annotate(count=Count("id"))
        .order_by("-count", "error_code")[:limit]
    )
    result = []
    for row in rows:
        sample = Deployment.objects.filter(
            release=release,
            state__in=FAILED_DEPLOYMENT_STATES,
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


def running_now(release: Release) -> dict:
    """What the release's devices run of its task now, from their reports."""
    rows = (
        RunningVersion.objects.filter(
            task_id=release.task_id,
            device_id__in=Deployment.objects.filter(release=release).values("device_id"),
        )
        .values("version__number", "state")
        .annotate(n=Count("id"))
        .order_by("-version__number", "state")
    )
    by_version = [
        {"version": r["version__number"], "state": r["state"], "devices": r["n"]} for r in rows
    ]
    return {
        "version": release.version.number,
        "on_version": sum(
            r["devices"] for r in by_version if r["version"] == release.version.number
        ),
        "by_version": by_version,
    }


# The monitoring sections a caller may ask for (`?sections=`), each computed only when asked:
# the dashboard refreshes a few of them every few seconds and needs neither the per-minute
# series nor the version comparison, the two heaviest.
SECTIONS = {
    "stages": stage_breakdown,
    "time_series": time_series,
    "failure_reasons": failure_reasons,
    # New version vs control, with sample sizes and verdicts (releases/compare.py).
    "run_metrics": compare.new_vs_control,
    "explain": gates.explain,
    "running": running_now,
}


def release_monitoring(release: Release, sections: Iterable[str] | None = None) -> dict:
    """The release's counts and rates, plus the named SECTIONS (all of them by default)."""
    counts = deployment_counts(release)
    body = {
        "release": release.pk,
        "state": release.state,
        "reason": release.reason,
        "current_stage": release.current_stage + 1,
        "counts": counts,
        **_rates(counts),
    }
    for name in SECTIONS if sections is None else sections:
        body[name] = SECTIONS[name](release)
    return body


def parse_sections(raw: str | None) -> list[str] | None:
    """`?sections=stages,explain` -> those names; None (every section) when absent."""
    if raw is None:
        return None
    names = [n.strip() for n in raw.split(",") if n.strip()]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        raise ParamError(
            "sections",
            f"unknown monitoring section {', '.join(unknown)}; use any of "
            f"{', '.join(SECTIONS)} (comma separated), or leave it out for all",
        )
    return names
