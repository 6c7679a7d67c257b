"""One step of a release's rollout, as the rollout worker (rolloutd) takes it: timeouts, the
error and compare gates, advance or complete, paced notices; and which releases are due.

Every step locks the release row first, so any number of workers may run at once.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from accounts.services import audit
from releases import compare, policy
from releases.choices import (
    FAILED_DEPLOYMENT_STATES,
    IN_FLIGHT_DEPLOYMENT_STATES,
    ROLLING_OUT_STATES,
    DeploymentState,
    ErrorAction,
    ReleaseEvent,
    ReleaseState,
    Step,
)
from releases.events import (
    release_changed,
    release_event,
)
from releases.models import Deployment, DeploymentEvent, Release
from releases.services import (
    admit_stage,
    move_to_next_stage,
    notify_pending,
    pause_release,
    previous_good_version,
    rollback_release,
    start_release,
)


def stage_counts(release: Release, stage: int | None = None) -> dict[str, int]:
    stage = release.current_stage if stage is None else stage
    row = Deployment.objects.filter(release=release, stage=stage).aggregate(
        total=Count("id"),
        succeeded=Count("id", filter=Q(state=DeploymentState.SUCCEEDED)),
        failures=Count("id", filter=Q(state__in=FAILED_DEPLOYMENT_STATES)),
    )
    row["finished"] = row["succeeded"] + row["failures"]
    return row


def _error_gate_tripped(release: Release, counts: dict[str, int]) -> bool:
    stage = release.stages[release.current_stage]
    # Wait for min_finished reports, or for the whole stage when it has fewer devices than
    # that: a 1% stage of two devices that both failed must not wait forever.
    needed = min(max(1, stage["min_finished"]), counts["total"])
    if counts["finished"] == 0 or counts["finished"] < needed:
        return False
    return counts["failures"] / counts["finished"] > stage["error_gate"]


def _top_failure(release: Release) -> str:
    row = (
        Deployment.objects.filter(release=release, state__in=FAILED_DEPLOYMENT_STATES)
        .values("error_code", "device__model")
        .annotate(n=Count("id"))
        .order_by("-n")
        .first()
    )
    return (
        f"{row['error_code'] or 'timed_out'} on {row['device__model'] or 'unknown model'} ({row['n']})"
        if row
        else ""
    )


def _apply_error_gate(release: Release, counts: dict[str, int]) -> Step | None:
    """Pause (or roll back) a locked running release whose error gate tripped."""
    if not _error_gate_tripped(release, counts):
        return None
    stage = release.stages[release.current_stage]
    share = counts["failures"] / counts["finished"]
    why = (
        f"error gate of stage {release.current_stage + 1} tripped: {share:.0%} failed or timed out "
        f"({counts['failures']} of {counts['finished']} finished, gate {stage['error_gate']:.0%}); "
        f"top reason: {_top_failure(release)}"
    )
    return _stop_by_gate(release, why)


def _stop_by_gate(release: Release, why: str) -> Step:
    """A gate says stop: roll back if the release says so (and can), else pause."""
    if release.on_error == ErrorAction.ROLLBACK and previous_good_version(release) is not None:
        rollback_release(release, reason=why)
        return Step.ROLLED_BACK
    pause_release(release, reason=why)
    release_event(release, ReleaseEvent.PAUSED_BY_GATE, reason=why)
    return Step.PAUSED


def _apply_compare_gate(release: Release) -> Step | None:
    """The optional gate of a stage: stop when the new version runs significantly worse than
    the control group (releases/compare.py)."""
    stage = release.stages[release.current_stage]
    if not stage.get("stop_if_worse"):
        return None
    why = compare.worse_than_control(release)
    if why is None:
        return None
    return _stop_by_gate(
        release, f"stop-if-worse gate of stage {release.current_stage + 1} tripped: {why}"
    )


def check_error_gate(release_id: int) -> Step | None:
    """Evaluate only the error gate (cheap: two counts), as every failure report does."""
    with transaction.atomic():
        release = (
            Release.objects.select_for_update(no_key=True, of=("self",))
            .select_related("task", "version", "app")
            .filter(pk=release_id)
            .first()
        )
        if release is None or release.state != ReleaseState.RUNNING:
            return None
        return _apply_error_gate(release, stage_counts(release))


def evaluate_release(release: Release, *, now: datetime | None = None) -> Step:
    """One step of the rollout for one release: timeouts, the error gate, advance or complete,
    paced notices. Safe to call from any number of workers at once; returns what it did."""
    with transaction.atomic():
        release = (
            Release.objects.select_for_update(no_key=True, of=("self",))
            .select_related("task", "version", "app")
            .filter(pk=release.pk)
            .first()
        )
        # Read the clock only once the lock is held: a worker that waited for another one's
        # transition must not judge it with a time from before it (the stage would look
        # started in the future, and never soaked).
        now = now or timezone.now()
        if release is None:
            return Step.GONE
        if (
            release.state == ReleaseState.DRAFT
            and release.scheduled_at
            and release.scheduled_at <= now
        ):
            start_release(release)
            return Step.STARTED
        if release.state not in ROLLING_OUT_STATES:
            return Step.IDLE
        timeout_s = policy.timeout_seconds(release.delivery or {})
        expired = list(
            Deployment.objects.filter(
                release=release,
                state__in=IN_FLIGHT_DEPLOYMENT_STATES,
                notified_at__lt=now - timedelta(seconds=timeout_s),
            ).values_list("id", flat=True)
        )
        if expired:
            Deployment.objects.filter(pk__in=expired, state__in=IN_FLIGHT_DEPLOYMENT_STATES).update(
                state=DeploymentState.TIMED_OUT,
                finished_at=now,
                error_code="timeout",
                error_message=f"not finished {timeout_s:g}s after the notice",
            )
            DeploymentEvent.objects.bulk_create(
                [
                    DeploymentEvent(
                        deployment_id=i,
                        state=DeploymentState.TIMED_OUT,
                        source="server",
                        error_code="timeout",
                    )
                    for i in expired
                ],
                ignore_conflicts=True,
            )
            release_event(
                release, ReleaseEvent.TIMED_OUT, devices=len(expired), timeout_s=timeout_s
            )
            release_changed(release.pk, release.app_id, "deployment")
        if release.state != ReleaseState.RUNNING:
            return Step.TIMEOUTS if expired else Step.PAUSED
        counts = stage_counts(release)
        if tripped := _apply_error_gate(release, counts) or _apply_compare_gate(release):
            return tripped
        stage = release.stages[release.current_stage]
        soaked = now >= (release.stage_started_at or now) + timedelta(seconds=stage["soak_s"])
        succeeded_share = counts["succeeded"] / counts["total"] if counts["total"] else 1.0
        if stage["auto_advance"] and soaked and succeeded_share >= stage["success_gate"]:
            if release.current_stage < len(release.stages) - 1:
                move_to_next_stage(release, now, None, f"gate met: {succeeded_share:.0%} succeeded")
                return Step.ADVANCED
            # Complete only once every deployment the release can still reach is final: a
            # failure in flight must be able to trip the last stage's error gate, and a paced
            # release must still ring its pending online devices, because a completed release
            # rings nobody (a pending device that is offline gets the version on its hello).
            admit_stage(release, now)
            notified = notify_pending(release, now)
            if notified or unfinished(release):
                return Step.FINISHING
            release.state = ReleaseState.COMPLETED
            release.finished_at = now
            release.save(update_fields=["state", "finished_at"])
            audit(
                release.app,
                None,
                "release.complete",
                "release",
                str(release.pk),
                {"succeeded_share": round(succeeded_share, 4)},
            )
            release_event(release, ReleaseEvent.COMPLETED, succeeded_share=succeeded_share)
            release_changed(release.pk, release.app_id)
            return Step.COMPLETED
        admit_stage(release, now)  # devices enrolled since the stage began
        notified = notify_pending(release, now)
        return Step.NOTIFIED if notified else Step.WAITING


def unfinished(release: Release) -> bool:
    """Does the release still have a deployment to finish: one in flight, or one pending on a
    device that is online (so it can be rung now)?"""
    return (
        Deployment.objects.filter(release=release)
        .filter(
            Q(state__in=IN_FLIGHT_DEPLOYMENT_STATES)
            | Q(state=DeploymentState.PENDING, device__online=True)
        )
        .exists()
    )


def due_releases() -> list[int]:
    """Releases the rollout worker has to look at now."""
    now = timezone.now()
    return list(
        Release.objects.filter(
            Q(state__in=ROLLING_OUT_STATES) | Q(state=ReleaseState.DRAFT, scheduled_at__lte=now)
        ).values_list("id", flat=True)
    )


def set_worker_error(release_id: int, error: str) -> bool:
    """Record (or, with "", clear) why the rollout worker could not evaluate a release.

    Written outside any failed transaction, without the row lock (the failing step may be the
    one holding it). True if the stored error changed.
    """
    changed = (
        Release.objects.filter(pk=release_id)
        .exclude(worker_error=error[:2000])
        .update(worker_error=error[:2000], worker_error_at=timezone.now() if error else None)
    )
    if changed:
        app_id = Release.objects.filter(pk=release_id).values_list("app_id", flat=True).first()
        if app_id is not None:
            with transaction.atomic():
                release_changed(release_id, app_id)
    return bool(changed)
