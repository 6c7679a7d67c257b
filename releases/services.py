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
from django.db import connection, transaction
from django.db.models import Count, Exists, F, OuterRef, Q
from django.utils import timezone

from accounts.services import audit
from devices.ingest import Rejected
from devices.models import Device, DeviceGroup
from devices.push import Notice, publish_notice
from devices.targeting import bucket, reached_devices, validate_target
from releases import compare, policy, running
from releases.choices import (
    DEPLOYMENT_ORDER,
    FAILED_DEPLOYMENT_STATES,
    FINAL_DEPLOYMENT_STATES,
    IN_FLIGHT_DEPLOYMENT_STATES,
    ROLLING_OUT_STATES,
    DeploymentState,
    ErrorAction,
    ReleaseAction,
    ReleaseEvent,
    ReleaseState,
    Step,
    states_allowing,
)
from releases.desired import admit_devices
from releases.events import (
    app_releases_changed,
    deployments_changed,
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


def _admit_stage(release: Release, now: datetime) -> int:
    """Admit the targeted devices whose bucket is inside the current stage.

    Built from value rows, not model instances (10k devices at a release start). When the
    release rings everyone at once, online devices are admitted already notified and rung
    after commit; a paced release admits them pending and `_notify_pending` rings them.
    """
    threshold = release.stage_basis_points()
    ring_now = release.state == ReleaseState.RUNNING and not policy.limited(release.delivery or {})
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
        _admit_stage(release, now)
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
        _admit_stage(release, now)  # devices enrolled while paused
        _notify_pending(release, now)
        audit(release.app, by, "release.resume", "release", str(release.pk))
        release_changed(release.pk, release.app_id)
    return release


def _advance(release: Release, now: datetime, by: AbstractBaseUser | None, why: str) -> None:
    release.current_stage += 1
    release.stage_started_at = now
    release.save(update_fields=["current_stage", "stage_started_at"])
    admitted = _admit_stage(release, now)
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
        _require(release, ReleaseAction.ADVANCE)
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
        _admit_stage(rollback, now)
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
        app_releases_changed(device.app_id)
    return pin


def unpin_device(device: Device, task: Task, *, by: AbstractBaseUser | None = None) -> None:
    with transaction.atomic():
        Pin.objects.filter(device=device, task=task).delete()
        audit(device.app, by, "device.unpin", "device", device.uid, {"task": task.name})
        app_releases_changed(device.app_id)


# --- reports and gates ------------------------------------------------------------------


@dataclass
class Report:
    """One device report: deployment `deployment_id` of `device` reached `state`."""

    device: Device
    deployment_id: int
    state: str
    error_code: str = ""
    error: str = ""


DEVICE_REPORTABLE = frozenset(DeploymentState.values) - {
    DeploymentState.PENDING,
    DeploymentState.NOTIFIED,
    DeploymentState.TIMED_OUT,
    DeploymentState.ROLLED_BACK,
}


def apply_report(deployment: Deployment, report: Report, now: datetime) -> list[str]:
    """Apply one new report's transition to a deployment (in memory); the fields it changed.

    The single place a device report moves a deployment: only forward (a late "downloading"
    after "succeeded" stays in the history but does not move the state back), and never out
    of a final state."""
    current = DeploymentState(deployment.state)
    state = DeploymentState(report.state)
    if DEPLOYMENT_ORDER[state] <= DEPLOYMENT_ORDER[current] or current in FINAL_DEPLOYMENT_STATES:
        return []
    deployment.state = state
    fields = ["state", "updated_at"]
    deployment.updated_at = now
    if state == DeploymentState.DOWNLOADING:
        deployment.attempts += 1
        fields.append("attempts")
    if state in FINAL_DEPLOYMENT_STATES:
        deployment.finished_at = now
        fields.append("finished_at")
    if state == DeploymentState.FAILED:
        deployment.error_code = report.error_code[:40]
        deployment.error_message = report.error[:2000]
        fields += ["error_code", "error_message"]
    return fields


def _insert_events(rows: list[tuple], at: datetime) -> None:
    """Append history rows [(deployment id, state, source, error code, message)] in one
    executemany: bulk_create's per-field preparation was the writer's largest cost at 10k."""
    if not rows:
        return
    meta = DeploymentEvent._meta
    names = ("deployment", "state", "source", "error_code", "message", "at")
    columns = ", ".join(connection.ops.quote_name(meta.get_field(n).column) for n in names)
    stamp = connection.ops.adapt_datetimefield_value(at)
    with connection.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO {connection.ops.quote_name(meta.db_table)} ({columns}) "
            f"VALUES ({', '.join(['%s'] * len(names))})",
            [(*row, stamp) for row in rows],
        )


def record_reports(reports: list[Report]) -> tuple[list[ReleaseError | None], set[int]]:
    """Apply a batch of device reports in the caller's transaction. Returns, per report, None
    when it is stored (or was already: a duplicate changes nothing) or the error that refuses
    it; and the releases that got a failure, whose error gate the caller evaluates after
    commit (it must not wait for the rollout worker's next tick).

    Idempotent per (deployment, state), enforced by the unique history row: the deployments
    are locked first (PostgreSQL row locks; SQLite holds the write lock), so a report sent
    again to another server process meanwhile waits and then finds its row."""
    outcomes: list[ReleaseError | None] = [None] * len(reports)
    ids = sorted({r.deployment_id for r in reports})
    deployments = {
        d.pk: d
        for d in Deployment.objects.select_for_update(no_key=True).filter(pk__in=ids).order_by("pk")
    }
    seen = set(
        DeploymentEvent.objects.filter(deployment_id__in=ids).values_list("deployment_id", "state")
    )
    now = timezone.now()
    events: list[tuple] = []
    changed: dict[int, set[str]] = {}
    failed_releases: set[int] = set()
    touched: dict[int, int] = {}
    transitions: list[running.Transition] = []
    for index, report in enumerate(reports):
        deployment = deployments.get(report.deployment_id)
        if report.state not in DEVICE_REPORTABLE:
            outcomes[index] = ReleaseError(f"a device cannot report state {report.state!r}")
            continue
        if deployment is None or deployment.device_id != report.device.pk:
            outcomes[index] = ReleaseError(
                f"deployment {report.deployment_id} does not exist for this device"
            )
            continue
        if (deployment.pk, report.state) in seen:
            continue  # duplicate report
        seen.add((deployment.pk, report.state))
        events.append(
            (deployment.pk, report.state, "device", report.error_code[:40], report.error[:2000])
        )
        if fields := apply_report(deployment, report, now):
            changed.setdefault(deployment.pk, set()).update(fields)
            touched[deployment.release_id] = report.device.app_id
            transitions.append(running.Transition(deployment.pk, report.state))
            if report.state == DeploymentState.FAILED:
                failed_releases.add(deployment.release_id)
    _insert_events(events, now)
    # One UPDATE per distinct set of new values (a batch is mostly "these 300 are now
    # installed"); Django's bulk_update builds a CASE per row and cost half the writer's time.
    by_values: dict[tuple, list[int]] = {}
    for pk, fields in changed.items():
        d = deployments[pk]
        values = tuple(
            (f, getattr(d, f)) for f in sorted(fields) if f not in ("attempts", "updated_at")
        )
        by_values.setdefault((values, "attempts" in fields), []).append(pk)
    for (values, bump_attempts), pks in by_values.items():
        update = dict(values, updated_at=now)
        if bump_attempts:
            update["attempts"] = F("attempts") + 1
        Deployment.objects.filter(pk__in=pks).update(**update)
    # What each device runs follows the reports that moved its deployments (in order).
    running.apply_running_version(transitions)
    for release_id, app_id in touched.items():
        deployments_changed(release_id, app_id)
    return outcomes, failed_releases


def record_report(
    device: Device, deployment_id: int, state: str, *, error_code: str = "", error: str = ""
) -> Deployment:
    """Apply one device report. Idempotent: the same (deployment, state) twice changes nothing."""
    with transaction.atomic():
        [outcome], failed = record_reports(
            [Report(device, deployment_id, state, error_code=error_code, error=error)]
        )
    if outcome is not None:
        raise outcome
    for release_id in failed:
        check_error_gate(release_id)
    return Deployment.objects.get(pk=deployment_id)


def ingest_report(items: list) -> None:
    """Ingest handler: a batch of `report` messages."""
    outcomes, failed = record_reports(
        [
            Report(
                item.device,
                item.payload["deployment"],
                item.payload["state"],
                error_code=item.payload.get("error_code") or "",
                error=item.payload.get("error") or "",
            )
            for item in items
        ]
    )
    for item, outcome in zip(items, outcomes, strict=True):
        item.error = outcome
    for release_id in failed:
        transaction.on_commit(lambda r=release_id: check_error_gate(r))


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
                _advance(release, now, None, f"gate met: {succeeded_share:.0%} succeeded")
                return Step.ADVANCED
            # Complete only once every deployment the release can still reach is final: a
            # failure in flight must be able to trip the last stage's error gate, and a paced
            # release must still ring its pending online devices, because a completed release
            # rings nobody (a pending device that is offline gets the version on its hello).
            _admit_stage(release, now)
            notified = _notify_pending(release, now)
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
        _admit_stage(release, now)  # devices enrolled since the stage began
        notified = _notify_pending(release, now)
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
