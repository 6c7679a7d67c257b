"""State changes of releases and deployments, and the desired state a device should reach.

Every verb writes inside one transaction, takes the release row lock before it looks at the
release's state, and publishes its notices only after commit: a device that reacts to the
doorbell always finds the new state in the database, and two callers at once (two rollout
workers, a worker and a button) serialize on the row instead of both acting.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import Count, Exists, OuterRef, Q
from django.utils import timezone

from accounts.services import audit
from devices.choices import GroupKind
from devices.models import Device, DeviceGroup
from releases import compare, policy, running, targeting
from releases.choices import (
    ACTIVE_RELEASE_STATES,
    DEPLOYMENT_ORDER,
    FINAL_DEPLOYMENT_STATES,
    DeploymentState,
    ErrorAction,
    ReleaseEvent,
    ReleaseState,
)
from releases.events import release_changed, release_event
from releases.models import Deployment, DeploymentEvent, Pin, Release
from tasks.models import Task, TaskVersion
from tasks.storage import manifest_url

DEFAULT_STAGES = [{"basis_points": 10_000}]
IN_FLIGHT = (DeploymentState.NOTIFIED, DeploymentState.DOWNLOADING, DeploymentState.INSTALLED)
FAILURES = (DeploymentState.FAILED, DeploymentState.TIMED_OUT)


class ReleaseError(ValueError):
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
    errors = targeting.validate_target(target) + stage_errors + delivery_errors
    if on_error not in ErrorAction.values:
        errors.append(f"on_error must be one of {', '.join(ErrorAction.values)}")
    if "groups" in target:
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


def _group_ids_of(
    device: Device, groups: list[DeviceGroup], static_members: dict[int, set[int]]
) -> frozenset[int]:
    return frozenset(
        g.pk
        for g in groups
        if (
            device.pk in static_members.get(g.pk, ())
            if g.kind == GroupKind.STATIC
            else targeting.matches(g.filter, device.uid, device.attrs())
        )
    )


def _groups_with_members(
    app_id: int, ids: list[int] | None = None
) -> tuple[list[DeviceGroup], dict[int, set[int]]]:
    qs = DeviceGroup.objects.filter(app_id=app_id)
    if ids is not None:
        qs = qs.filter(pk__in=ids)
    groups = list(qs)
    static = [g.pk for g in groups if g.kind == GroupKind.STATIC]
    members: dict[int, set[int]] = {pk: set() for pk in static}
    for group_id, device_id in DeviceGroup.members.through.objects.filter(
        devicegroup_id__in=static
    ).values_list("devicegroup_id", "device_id"):
        members[group_id].add(device_id)
    return groups, members


def targeted_devices(app_id: int, target: dict, *, not_in: Release | None = None) -> list[Device]:
    """Every enrolled device of the app inside the target (before stage bucketing).

    `not_in` skips devices that already have a deployment of that release, in SQL (an
    anti-join on the unique (release, device) index): the steady-state rollout tick then
    looks only at devices enrolled since, not at the whole fleet.
    """
    devices = Device.objects.filter(app_id=app_id)
    if not_in is not None:
        devices = devices.exclude(
            Exists(Deployment.objects.filter(release=not_in, device=OuterRef("pk")))
        )
    # Narrow in SQL what SQL can say; targeting.matches below stays the single source of truth.
    if target.get("regions"):
        devices = devices.filter(region__in=target["regions"])
    if target.get("os"):
        devices = devices.filter(os__in=target["os"])
    if target.get("models"):
        by_model = Q()
        for pattern in target["models"]:
            by_model |= (
                Q(model__startswith=pattern[:-1]) if pattern.endswith("*") else Q(model=pattern)
            )
        devices = devices.filter(by_model)
    devices = devices.order_by().only(
        "id",
        "uid",
        "app_id",
        "app_version",
        "os",
        "os_version",
        "model",
        "region",
        "tags",
        "engine_version",
        "online",
    )
    if "device_ids" in target:
        devices = devices.filter(uid__in=target["device_ids"])
    groups, members = _groups_with_members(app_id, target.get("groups", []))
    return [
        d
        for d in devices.iterator(chunk_size=5000)
        if targeting.matches(target, d.uid, d.attrs(), _group_ids_of(d, groups, members))
    ]


def preview(app_id: int, target: dict, stages: list[dict] | None = None, salt: str = "") -> dict:
    """How many enrolled devices a target reaches now, in total and cumulatively per stage."""
    stages_full, stage_errors = policy.normalize_stages(
        DEFAULT_STAGES if stages is None else stages
    )
    errors = targeting.validate_target(target) + stage_errors
    if errors:
        raise ReleaseError("; ".join(errors))
    salt = salt or "preview"
    buckets = [targeting.bucket(salt, d.uid) for d in targeted_devices(app_id, target)]
    return {
        "total": len(buckets),
        "stages": [sum(1 for b in buckets if b < s["basis_points"]) for s in stages_full],
        "salt": salt,
    }


# --- notices ----------------------------------------------------------------------------


@dataclass
class Notice:
    """What is published after commit: the doorbell frame and the devices it is for."""

    task: str
    version: int
    digest: str
    device_uids: list[str]


def _publish_after_commit(release: Release, uids: list[str]) -> None:
    if not uids:
        return
    notice = Notice(
        task=release.task.name,
        version=release.version.number,
        digest=release.version.digest,
        device_uids=uids,
    )
    from devices.push import publish_notice

    transaction.on_commit(lambda: publish_notice(notice))


def _admit_stage(release: Release) -> int:
    """Create pending deployments for targeted devices whose bucket is inside the current stage."""
    threshold = release.stage_basis_points()
    new = []
    for device in targeted_devices(release.app_id, release.target, not_in=release):
        b = targeting.bucket(release.salt, device.uid)
        if b < threshold:
            new.append(
                Deployment(release=release, device=device, bucket=b, stage=release.current_stage)
            )
    Deployment.objects.bulk_create(new, batch_size=2000)
    return len(new)


def _notify_pending(release: Release, now: datetime) -> int:
    """Ring online devices with a pending deployment, within the release's pace and in-flight cap."""
    if release.state != ReleaseState.RUNNING:
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
            in_flight = Deployment.objects.filter(release=release, state__in=IN_FLIGHT).count()
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
    return (
        Release.objects.select_for_update()
        .select_related("task", "version", "app")
        .get(pk=release.pk)
    )


def _require(release: Release, states: tuple[str, ...], action: str) -> None:
    if release.state not in states:
        allowed = " or ".join(states)
        raise ReleaseError(
            f"cannot {action} release {release.pk}: it is {release.state}, and only a {allowed} release can be"
        )


# --- actions ----------------------------------------------------------------------------


def start_release(
    release: Release, *, at: datetime | None = None, by: AbstractBaseUser | None = None
) -> Release:
    """Start a draft now, or schedule it to start at `at` (the rollout worker starts it then)."""
    with transaction.atomic():
        release = _locked(release)
        _require(release, (ReleaseState.DRAFT,), "start")
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
        _admit_stage(release)
        _notify_pending(release, now)
        audit(release.app, by, "release.start", "release", str(release.pk))
        release_changed(release.pk, release.app_id)
    return release


def pause_release(
    release: Release, *, reason: str = "", by: AbstractBaseUser | None = None
) -> Release:
    """No new devices are rung or admitted; those already notified finish."""
    with transaction.atomic():
        release = _locked(release)
        _require(release, (ReleaseState.RUNNING,), "pause")
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
        _require(release, (ReleaseState.PAUSED,), "resume")
        now = timezone.now()
        release.state = ReleaseState.RUNNING
        release.reason = ""
        release.last_notify_at = now
        release.notify_credit = 0.0
        release.save(update_fields=["state", "reason", "last_notify_at", "notify_credit"])
        _admit_stage(release)  # devices enrolled while paused
        _notify_pending(release, now)
        audit(release.app, by, "release.resume", "release", str(release.pk))
        release_changed(release.pk, release.app_id)
    return release


def _advance(release: Release, now: datetime, by: AbstractBaseUser | None, why: str) -> None:
    release.current_stage += 1
    release.stage_started_at = now
    release.save(update_fields=["current_stage", "stage_started_at"])
    admitted = _admit_stage(release)
    _notify_pending(release, now)
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
        _require(release, (ReleaseState.RUNNING, ReleaseState.PAUSED), "advance")
        if release.current_stage >= len(release.stages) - 1:
            raise ReleaseError(
                f"release {release.pk} is already at its last stage ({len(release.stages)} of {len(release.stages)})"
            )
        _advance(release, timezone.now(), by, "manual")
    return release


def abort_release(
    release: Release, *, reason: str = "", by: AbstractBaseUser | None = None
) -> Release:
    """Stop for good: no new notices; deployments already in flight finish."""
    with transaction.atomic():
        release = _locked(release)
        _require(release, (ReleaseState.DRAFT, ReleaseState.RUNNING, ReleaseState.PAUSED), "abort")
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
        _require(
            release,
            (
                ReleaseState.RUNNING,
                ReleaseState.PAUSED,
                ReleaseState.COMPLETED,
                ReleaseState.ABORTED,
            ),
            "roll back",
        )
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
        _admit_stage(rollback)
        _notify_pending(rollback, now)
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
    return pin


def unpin_device(device: Device, task: Task, *, by: AbstractBaseUser | None = None) -> None:
    with transaction.atomic():
        Pin.objects.filter(device=device, task=task).delete()
        audit(device.app, by, "device.unpin", "device", device.uid, {"task": task.name})


# --- reports and gates ------------------------------------------------------------------


def _record_event(
    deployment: Deployment, state: str, *, source: str, error_code: str = "", message: str = ""
) -> bool:
    """Append a history row; False if this deployment already passed through `state`."""
    try:
        with transaction.atomic():
            DeploymentEvent.objects.create(
                deployment=deployment,
                state=state,
                source=source,
                error_code=error_code,
                message=message[:2000],
            )
    except IntegrityError:
        return False
    return True


def record_report(
    device: Device, deployment_id: int, state: str, *, error_code: str = "", error: str = ""
) -> Deployment:
    """Apply one device report. Idempotent: the same (deployment, state) twice changes nothing."""
    if state not in DeploymentState.values or state in (
        DeploymentState.PENDING,
        DeploymentState.NOTIFIED,
        DeploymentState.TIMED_OUT,
        DeploymentState.ROLLED_BACK,
    ):
        raise ReleaseError(f"a device cannot report state {state!r}")
    with transaction.atomic():
        deployment = (
            Deployment.objects.select_for_update().filter(pk=deployment_id, device=device).first()
        )
        if deployment is None:
            raise ReleaseError(f"deployment {deployment_id} does not exist for this device")
        if not _record_event(
            deployment, state, source="device", error_code=error_code, message=error
        ):
            return deployment  # duplicate report
        current = DeploymentState(deployment.state)
        if (
            DEPLOYMENT_ORDER[DeploymentState(state)] <= DEPLOYMENT_ORDER[current]
            or current in FINAL_DEPLOYMENT_STATES
        ):
            return deployment  # late report of an earlier step: history keeps it, state does not move back
        deployment.state = state
        fields = ["state", "updated_at"]
        if state == DeploymentState.DOWNLOADING:
            deployment.attempts += 1
            fields.append("attempts")
        if state in FINAL_DEPLOYMENT_STATES:
            deployment.finished_at = timezone.now()
            fields.append("finished_at")
        if state == DeploymentState.FAILED:
            deployment.error_code = error_code[:40]
            deployment.error_message = error[:2000]
            fields += ["error_code", "error_message"]
        deployment.save(update_fields=fields)
        running.apply_running_version([running.Transition(deployment.pk, state)])
        release_changed(deployment.release_id, device.app_id, "deployment")
    if state == DeploymentState.FAILED:
        # The error gate must not wait for the next worker tick: every failure evaluates it.
        check_error_gate(deployment.release_id)
    return deployment


def stage_counts(release: Release, stage: int | None = None) -> dict[str, int]:
    stage = release.current_stage if stage is None else stage
    row = Deployment.objects.filter(release=release, stage=stage).aggregate(
        total=Count("id"),
        succeeded=Count("id", filter=Q(state=DeploymentState.SUCCEEDED)),
        failures=Count("id", filter=Q(state__in=FAILURES)),
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
        Deployment.objects.filter(release=release, state__in=FAILURES)
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


def _apply_error_gate(release: Release, counts: dict[str, int]) -> str | None:
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


def _stop_by_gate(release: Release, why: str) -> str:
    """A gate says stop: roll back if the release says so (and can), else pause."""
    if release.on_error == ErrorAction.ROLLBACK and previous_good_version(release) is not None:
        rollback_release(release, reason=why)
        return "rolled_back"
    pause_release(release, reason=why)
    release_event(release, ReleaseEvent.PAUSED_BY_GATE, reason=why)
    return "paused"


def _apply_compare_gate(release: Release) -> str | None:
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


def check_error_gate(release_id: int) -> str | None:
    """Evaluate only the error gate (cheap: two counts), as every failure report does."""
    with transaction.atomic():
        release = (
            Release.objects.select_for_update()
            .select_related("task", "version", "app")
            .filter(pk=release_id)
            .first()
        )
        if release is None or release.state != ReleaseState.RUNNING:
            return None
        return _apply_error_gate(release, stage_counts(release))


def evaluate_release(release: Release, *, now: datetime | None = None) -> str:
    """One step of the rollout for one release: timeouts, the error gate, advance or complete,
    paced notices. Safe to call from any number of workers at once; returns what it did."""
    with transaction.atomic():
        release = (
            Release.objects.select_for_update()
            .select_related("task", "version", "app")
            .filter(pk=release.pk)
            .first()
        )
        # Read the clock only once the lock is held: a worker that waited for another one's
        # transition must not judge it with a time from before it (the stage would look
        # started in the future, and never soaked).
        now = now or timezone.now()
        if release is None:
            return "gone"
        if (
            release.state == ReleaseState.DRAFT
            and release.scheduled_at
            and release.scheduled_at <= now
        ):
            start_release(release)
            return "started"
        if release.state not in (ReleaseState.RUNNING, ReleaseState.PAUSED):
            return "idle"
        timeout_s = (release.delivery or {}).get("timeout_s") or policy.DELIVERY_DEFAULTS[
            "timeout_s"
        ]
        expired = list(
            Deployment.objects.filter(
                release=release,
                state__in=IN_FLIGHT,
                notified_at__lt=now - timedelta(seconds=timeout_s),
            ).values_list("id", flat=True)
        )
        if expired:
            Deployment.objects.filter(pk__in=expired, state__in=IN_FLIGHT).update(
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
            return "timeouts" if expired else "paused"
        counts = stage_counts(release)
        if tripped := _apply_error_gate(release, counts) or _apply_compare_gate(release):
            return tripped
        stage = release.stages[release.current_stage]
        soaked = now >= (release.stage_started_at or now) + timedelta(seconds=stage["soak_s"])
        succeeded_share = counts["succeeded"] / counts["total"] if counts["total"] else 1.0
        if stage["auto_advance"] and soaked and succeeded_share >= stage["success_gate"]:
            if release.current_stage < len(release.stages) - 1:
                _advance(release, now, None, f"gate met: {succeeded_share:.0%} succeeded")
                return "advanced"
            if Deployment.objects.filter(release=release, state__in=IN_FLIGHT).exists():
                # Complete only once every rung device finished (or timed out): a failure
                # still in flight must be able to trip the error gate of the last stage.
                return "finishing"
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
            return "completed"
        _admit_stage(release)  # devices enrolled since the stage began
        notified = _notify_pending(release, now)
        return f"notified {notified}" if notified else "waiting"


def due_releases() -> list[int]:
    """Releases the rollout worker has to look at now."""
    now = timezone.now()
    return list(
        Release.objects.filter(
            Q(state__in=(ReleaseState.RUNNING, ReleaseState.PAUSED))
            | Q(state=ReleaseState.DRAFT, scheduled_at__lte=now)
        ).values_list("id", flat=True)
    )


# --- desired state ----------------------------------------------------------------------


def desired_state(device: Device) -> list[dict]:
    """The task versions this device should run now.

    Rules, in order: a pin wins; otherwise the newest started release of the task that has
    this device in its current stage wins (a newer release at 1% does not take the device
    from an older release at 100% until its own stage reaches it). A paced release hands
    out its version only once the notifier has rung the device.
    """
    result: dict[str, dict] = {}
    pins = Pin.objects.filter(device=device).select_related("task", "version")
    for pin in pins:
        result[pin.task.name] = {
            "task": pin.task.name,
            "version": pin.version.number,
            "digest": pin.version.digest,
            "manifest_url": manifest_url(pin.version.digest),
            "deployment": None,
            "release": None,
        }
    releases = list(
        Release.objects.filter(
            app_id=device.app_id, state__in=(*ACTIVE_RELEASE_STATES, ReleaseState.ABORTED)
        )
        .select_related("task", "version")
        .order_by("-started_at", "-id")
    )
    if not releases:
        return [result[k] for k in sorted(result)]
    deployments = {
        d.release_id: d
        for d in Deployment.objects.filter(device=device, release__in=[r.pk for r in releases])
    }
    group_ids: frozenset[int] | None = None
    now = timezone.now()
    for release in releases:
        task_name = release.task.name
        if task_name in result:
            continue  # pinned, or a newer release of this task already decided
        deployment = deployments.get(release.pk)
        if deployment is None and release.state in (ReleaseState.RUNNING, ReleaseState.COMPLETED):
            if group_ids is None:
                groups, members = _groups_with_members(device.app_id)
                group_ids = _group_ids_of(device, groups, members)
            if not targeting.matches(release.target, device.uid, device.attrs(), group_ids):
                continue
            b = targeting.bucket(release.salt, device.uid)
            threshold = (
                10_000 if release.state == ReleaseState.COMPLETED else release.stage_basis_points()
            )
            if b >= threshold:
                continue
            deployment, _ = Deployment.objects.get_or_create(
                release=release,
                device=device,
                defaults={"bucket": b, "stage": release.current_stage},
            )
        if deployment is None or deployment.state == DeploymentState.ROLLED_BACK:
            continue
        if deployment.state == DeploymentState.PENDING:
            paced = policy.limited(release.delivery or {}) and release.state == ReleaseState.RUNNING
            if paced or release.state not in (ReleaseState.RUNNING, ReleaseState.COMPLETED):
                # Paced: the notifier rings it within the rate. Paused or aborted: no new devices.
                continue
            Deployment.objects.filter(pk=deployment.pk, state=DeploymentState.PENDING).update(
                state=DeploymentState.NOTIFIED, notified_at=now
            )
        delivery = release.delivery or {}
        result[task_name] = {
            "task": task_name,
            "version": release.version.number,
            "digest": release.version.digest,
            "manifest_url": manifest_url(release.version.digest),
            "deployment": deployment.pk,
            "release": release.pk,
            "max_retries": int(
                delivery.get("max_retries", policy.DELIVERY_DEFAULTS["max_retries"])
            ),
            "retry_backoff_s": float(
                delivery.get("retry_backoff_s", policy.DELIVERY_DEFAULTS["retry_backoff_s"])
            ),
            "pull_jitter_s": float(delivery.get("pull_jitter_s", 0.0)),
        }
    return [result[k] for k in sorted(result)]
