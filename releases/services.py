"""Operator verbs on releases: create, preview, start, pause, resume, advance, abort, roll
back, pin. The rollout step lives in releases/rollout.py, device reports in
releases/reports.py, the desired state in releases/desired.py.

Every verb writes inside one transaction, takes the release row lock before it looks at the
release's state, and publishes its notices only after commit: a device that reacts to the
doorbell always finds the new state in the database, and two callers at once (two rollout
workers, a worker and a button) serialize on the row instead of both acting.
"""

from __future__ import annotations

import secrets
from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from accounts.services import audit
from devices.ingest import Rejected
from devices.models import Device, DeviceGroup
from devices.publish import reaches_sockets
from devices.push import Notice, publish_notice
from devices.targeting import bucket, reached_devices, validate_target
from releases import policy, running
from releases.choices import (
    FINAL_DEPLOYMENT_STATES,
    IN_FLIGHT_DEPLOYMENT_STATES,
    DeploymentState,
    ErrorAction,
    ReleaseAction,
    ReleaseEvent,
    ReleaseState,
    states_allowing,
)
from releases.desired import admit_devices
from releases.events import (
    app_releases_changed,
    release_changed,
    release_event,
)
from releases.models import Deployment, DeploymentEvent, Pin, Release
from tasks.models import Task, TaskVersion

DEFAULT_STAGES = [{"basis_points": 10_000}]


class ReleaseError(Rejected):
    """A release action that is not possible now; the message says why and what to do."""


# --- creating and targeting -------------------------------------------------------------


def create_release(
    version: TaskVersion,
    *,
    target: dict | None = None,
    stages: list[dict] | None = None,
    delivery: dict | None = None,
    on_error: str = ErrorAction.PAUSE,
    scheduled_at: datetime | None = None,
    name: str = "",
    salt: str = "",
    by: AbstractBaseUser | None = None,
) -> Release:
    target = target or {}
    stages_full, stage_errors = policy.normalize_stages(
        DEFAULT_STAGES if stages is None else stages
    )
    delivery_full, delivery_errors = policy.normalize_delivery(delivery)
    errors = validate_target(target) + stage_errors + delivery_errors
    if on_error not in ErrorAction.values:
        errors.append(f"on_error must be one of {', '.join(ErrorAction.values)}")
    if "groups" in target and not errors:
        found = set(
            DeviceGroup.objects.filter(app=version.task.app, pk__in=target["groups"]).values_list(
                "pk", flat=True
            )
        )
        missing = [g for g in target["groups"] if g not in found]
        if missing:
            errors.append(f"target groups {missing} do not exist in app {version.task.app.slug!r}")
    if errors:
        raise ReleaseError("; ".join(errors))
    task = version.task
    with transaction.atomic():
        release = Release.objects.create(
            app=task.app,
            task=task,
            version=version,
            name=name or f"{task.name} v{version.number}",
            target=target,
            stages=stages_full,
            delivery=delivery_full,
            on_error=on_error,
            scheduled_at=scheduled_at,
            salt=salt or secrets.token_hex(8),
            created_by=by if getattr(by, "is_authenticated", False) else None,
        )
        audit(
            task.app, by, "release.create", "release", str(release.pk), {"version": version.number}
        )
    return release


def preview(app_id: int, target: dict, stages: list[dict] | None = None, salt: str = "") -> dict:
    """How many enrolled devices a target reaches now, in total and cumulatively per stage."""
    stages_full, stage_errors = policy.normalize_stages(
        DEFAULT_STAGES if stages is None else stages
    )
    errors = validate_target(target) + stage_errors
    if errors:
        raise ReleaseError("; ".join(errors))
    salt = salt or "preview"
    buckets = [bucket(salt, d.uid) for d in reached_devices(app_id, target)]
    return {
        "total": len(buckets),
        "stages": [sum(1 for b in buckets if b < s["basis_points"]) for s in stages_full],
        "salt": salt,
    }


# --- notices ----------------------------------------------------------------------------


def _publish_after_commit(release: Release, uids: list[str]) -> None:
    if not uids:
        return
    notice = Notice(
        app=release.app_id,
        task=release.task.name,
        version=release.version.number,
        digest=release.version.digest,
        device_uids=uids,
    )
    transaction.on_commit(lambda: publish_notice(notice))


def admit_stage(release: Release, now: datetime) -> int:
    """Admit the targeted devices whose bucket is inside the current stage.

    Built from value rows, not model instances (10k devices at a release start). When the
    release rings everyone at once, online devices are admitted already notified and rung
    after commit; a paced release (or a process whose notices reach no socket) admits them
    pending and `notify_pending` rings them.
    """
    threshold = release.stage_basis_points()
    ring_now = (
        release.state == ReleaseState.RUNNING
        and not policy.limited(release.delivery or {})
        and reaches_sockets()
    )
    rows, rung = [], []
    already = Exists(Deployment.objects.filter(release=release, device=OuterRef("pk")))
    for device in reached_devices(release.app_id, release.target, exclude=already):
        b = bucket(release.salt, device.uid)
        if b < threshold:
            notified = ring_now and device.online
            rows.append((device.id, b, notified))
            if notified:
                rung.append(device.uid)
    admit_devices(release.pk, release.app_id, release.current_stage, rows, now)
    _publish_after_commit(release, rung)
    return len(rows)


def notify_pending(release: Release, now: datetime) -> int:
    """Ring online devices with a pending deployment, within the release's pace and in-flight cap.

    From a process whose notices reach no socket (a shell, in the embedded configuration)
    nobody is rung: the devices stay pending, and the server's rollout loop rings them.
    """
    if release.state != ReleaseState.RUNNING or not reaches_sockets():
        return 0
    delivery = release.delivery or {}
    budget: float | None = None
    if policy.limited(delivery):
        budget = float("inf")
        if delivery.get("notify_rate"):
            running_s = (now - (release.started_at or now)).total_seconds()
            since = (now - (release.last_notify_at or release.started_at or now)).total_seconds()
            budget = release.notify_credit + policy.current_rate(delivery, running_s) * max(
                since, 0.0
            )
            # A long pause must not save up a burst: cap the credit at one second's worth plus one.
            budget = min(budget, policy.current_rate(delivery, running_s) + 1)
        if delivery.get("max_in_flight"):
            in_flight = Deployment.objects.filter(
                release=release, state__in=IN_FLIGHT_DEPLOYMENT_STATES
            ).count()
            budget = min(budget, max(0, delivery["max_in_flight"] - in_flight))
    pending = Deployment.objects.filter(
        release=release, state=DeploymentState.PENDING, device__online=True
    ).order_by("bucket")
    if budget is not None:
        pending = pending[: int(budget)]
    rows = list(pending.values_list("id", "device__uid"))
    if rows:
        ids = [r[0] for r in rows]
        Deployment.objects.filter(pk__in=ids, state=DeploymentState.PENDING).update(
            state=DeploymentState.NOTIFIED, notified_at=now
        )
        _publish_after_commit(release, [r[1] for r in rows])
    if budget is not None and delivery.get("notify_rate"):
        release.notify_credit = (
            max(0.0, min(budget, 1e9) - len(rows)) if budget != float("inf") else 0.0
        )
    release.last_notify_at = now
    release.save(update_fields=["notify_credit", "last_notify_at"])
    return len(rows)


def _locked(release: Release) -> Release:
    # FOR NO KEY UPDATE, of the release row only: the key-share locks that PostgreSQL's
    # deferred foreign-key checks take at commit (every event, deployment or running-version
    # row that points at this release) do not wait for it, so a verb holding the release no
    # longer deadlocks with an ingest batch committing reports of that release. Every lock in
    # the project takes this mode: no verb changes a primary key.
    return (
        Release.objects.select_for_update(no_key=True, of=("self",))
        .select_related("task", "version", "app")
        .get(pk=release.pk)
    )


def _require(release: Release, action: ReleaseAction) -> None:
    """Refuse `action` unless the release state machine (choices.ALLOWED_ACTIONS) allows it."""
    states = states_allowing(action)
    if release.state not in states:
        allowed = " or ".join(states)
        verb = action.label.lower()
        raise ReleaseError(
            f"cannot {verb} release {release.pk}: it is {release.state}, and only a {allowed} release can be"
        )


# --- actions ----------------------------------------------------------------------------


def start_release(
    release: Release, *, at: datetime | None = None, by: AbstractBaseUser | None = None
) -> Release:
    """Start a draft now, or schedule it to start at `at` (the rollout worker starts it then)."""
    with transaction.atomic():
        release = _locked(release)
        _require(release, ReleaseAction.START)
        now = timezone.now()
        if at is not None and at > now:
            release.scheduled_at = at
            release.save(update_fields=["scheduled_at"])
            audit(
                release.app,
                by,
                "release.schedule",
                "release",
                str(release.pk),
                {"at": at.isoformat()},
            )
            return release
        release.state = ReleaseState.RUNNING
        release.started_at = now
        release.stage_started_at = now
        release.last_notify_at = now
        release.current_stage = 0
        release.save(
            update_fields=[
                "state",
                "started_at",
                "stage_started_at",
                "current_stage",
                "last_notify_at",
            ]
        )
        admit_stage(release, now)
        notify_pending(release, now)
        audit(release.app, by, "release.start", "release", str(release.pk))
        release_changed(release.pk, release.app_id)
    return release


def pause_release(
    release: Release, *, reason: str = "", by: AbstractBaseUser | None = None
) -> Release:
    """No new devices are rung or admitted; those already notified finish."""
    with transaction.atomic():
        release = _locked(release)
        _require(release, ReleaseAction.PAUSE)
        release.state = ReleaseState.PAUSED
        release.reason = reason or "paused by an operator"
        release.save(update_fields=["state", "reason"])
        audit(
            release.app, by, "release.pause", "release", str(release.pk), {"reason": release.reason}
        )
        release_changed(release.pk, release.app_id)
    return release


def resume_release(release: Release, *, by: AbstractBaseUser | None = None) -> Release:
    with transaction.atomic():
        release = _locked(release)
        _require(release, ReleaseAction.RESUME)
        now = timezone.now()
        release.state = ReleaseState.RUNNING
        release.reason = ""
        release.last_notify_at = now
        release.notify_credit = 0.0
        release.save(update_fields=["state", "reason", "last_notify_at", "notify_credit"])
        admit_stage(release, now)  # devices enrolled while paused
        notify_pending(release, now)
        audit(release.app, by, "release.resume", "release", str(release.pk))
        release_changed(release.pk, release.app_id)
    return release


def move_to_next_stage(
    release: Release, now: datetime, by: AbstractBaseUser | None, why: str
) -> None:
    release.current_stage += 1
    release.stage_started_at = now
    release.save(update_fields=["current_stage", "stage_started_at"])
    admitted = admit_stage(release, now)
    notify_pending(release, now)
    audit(
        release.app,
        by,
        "release.advance",
        "release",
        str(release.pk),
        {"stage": release.current_stage + 1, "admitted": admitted, "why": why},
    )
    release_changed(release.pk, release.app_id)


def advance_release(release: Release, *, by: AbstractBaseUser | None = None) -> Release:
    """Move to the next stage now, whatever its gates say (an operator's decision)."""
    with transaction.atomic():
        release = _locked(release)
        _require(release, ReleaseAction.ADVANCE)
        if release.current_stage >= len(release.stages) - 1:
            raise ReleaseError(
                f"release {release.pk} is already at its last stage ({len(release.stages)} of {len(release.stages)})"
            )
        move_to_next_stage(release, timezone.now(), by, "manual")
    return release


def abort_release(
    release: Release, *, reason: str = "", by: AbstractBaseUser | None = None
) -> Release:
    """Stop for good: no new notices; deployments already in flight finish."""
    with transaction.atomic():
        release = _locked(release)
        _require(release, ReleaseAction.ABORT)
        release.state = ReleaseState.ABORTED
        release.reason = reason or "aborted by an operator"
        release.finished_at = timezone.now()
        release.save(update_fields=["state", "reason", "finished_at"])
        audit(
            release.app, by, "release.abort", "release", str(release.pk), {"reason": release.reason}
        )
        release_event(release, ReleaseEvent.FAILED, outcome="aborted", reason=release.reason, by=by)
        release_changed(release.pk, release.app_id)
    return release


def previous_good_version(release: Release) -> TaskVersion | None:
    """The version the fleet ran before: the newest other version a completed release shipped."""
    earlier = (
        Release.objects.filter(
            task=release.task, state=ReleaseState.COMPLETED, created_at__lte=release.created_at
        )
        .exclude(pk=release.pk)
        .exclude(version=release.version)
        .select_related("version")
        .order_by("-created_at", "-id")
        .first()
    )
    return earlier.version if earlier else None


def rollback_release(
    release: Release,
    *,
    to_version: TaskVersion | None = None,
    reason: str = "",
    skip_stages: bool = True,
    by: AbstractBaseUser | None = None,
) -> Release:
    """Stop `release` and release the previous good version (or `to_version`) to its target.

    Devices keep the previous version cached, so they switch back without a download.
    """
    with transaction.atomic():
        release = _locked(release)
        _require(release, ReleaseAction.ROLLBACK)
        target_version = to_version or previous_good_version(release)
        if target_version is None:
            raise ReleaseError(
                f"release {release.pk} has no previous good version to roll back to (no earlier completed release "
                "of this task); choose a version explicitly"
            )
        if target_version.task_id != release.task_id:
            raise ReleaseError("the rollback version must be a version of the same task")
        if target_version.pk == release.version_id:
            raise ReleaseError(
                f"release {release.pk} already ships v{target_version.number}; choose an earlier version"
            )
        now = timezone.now()
        release.state = ReleaseState.ROLLED_BACK
        release.reason = reason or f"rolled back to v{target_version.number}"
        release.finished_at = now
        release.save(update_fields=["state", "reason", "finished_at"])
        unfinished = list(
            Deployment.objects.filter(release=release)
            .exclude(state__in=FINAL_DEPLOYMENT_STATES)
            .values_list("id", flat=True)
        )
        Deployment.objects.filter(pk__in=unfinished).update(
            state=DeploymentState.ROLLED_BACK, finished_at=now
        )
        DeploymentEvent.objects.bulk_create(
            [
                DeploymentEvent(
                    deployment_id=i,
                    state=DeploymentState.ROLLED_BACK,
                    source="server",
                    message=release.reason,
                )
                for i in unfinished
            ],
            ignore_conflicts=True,
        )
        running.rollback_ordered(release, target_version)
        rollback = Release.objects.create(
            app=release.app,
            task=release.task,
            version=target_version,
            name=f"rollback of release {release.pk} to v{target_version.number}",
            target=release.target,
            stages=policy.normalize_stages(DEFAULT_STAGES)[0] if skip_stages else release.stages,
            delivery={**release.delivery, "notify_rate": 0, "max_in_flight": 0}
            if skip_stages
            else release.delivery,
            on_error=ErrorAction.PAUSE,
            salt=release.salt,  # same buckets: the same canaries go first if stages are kept
            rollback_of=release,
            reason=reason or f"rollback of release {release.pk}",
            created_by=by if getattr(by, "is_authenticated", False) else None,
            state=ReleaseState.RUNNING,
            started_at=now,
            stage_started_at=now,
            last_notify_at=now,
        )
        admit_stage(rollback, now)
        notify_pending(rollback, now)
        audit(
            release.app,
            by,
            "release.rollback",
            "release",
            str(release.pk),
            {
                "to_version": target_version.number,
                "rollback": rollback.pk,
                "reason": release.reason,
            },
        )
        release_event(
            release,
            ReleaseEvent.FAILED,
            outcome="rolled_back",
            reason=release.reason,
            by=by,
            rollback=rollback.pk,
            to_version=target_version.number,
        )
        release_changed(release.pk, release.app_id)
        release_changed(rollback.pk, release.app_id)
    return rollback


def pin_device(
    device: Device, version: TaskVersion, *, reason: str = "", by: AbstractBaseUser | None = None
) -> Pin:
    if version.task.app_id != device.app_id:
        raise ReleaseError("a device can only be pinned to a version of its own app's tasks")
    with transaction.atomic():
        pin, _ = Pin.objects.update_or_create(
            device=device, task=version.task, defaults={"version": version, "reason": reason}
        )
        audit(
            device.app,
            by,
            "device.pin",
            "device",
            device.uid,
            {"task": version.task.name, "version": version.number},
        )
        app_releases_changed(device.app_id)
    return pin


def unpin_device(device: Device, task: Task, *, by: AbstractBaseUser | None = None) -> None:
    with transaction.atomic():
        Pin.objects.filter(device=device, task=task).delete()
        audit(device.app, by, "device.unpin", "device", device.uid, {"task": task.name})
        app_releases_changed(device.app_id)
