"""State changes of releases and deployments, and the desired state a device should reach.

Every verb writes inside one transaction and publishes its notice only after commit, so a
device that reacts to the doorbell always finds the new state in the database.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.services import audit
from devices.choices import GroupKind
from devices.models import Device, DeviceGroup
from releases import targeting
from releases.choices import (
    ACTIVE_RELEASE_STATES,
    DEPLOYMENT_ORDER,
    FINAL_DEPLOYMENT_STATES,
    DeploymentState,
    ReleaseState,
)
from releases.models import Deployment, DeploymentEvent, Release
from tasks.models import TaskVersion
from tasks.storage import manifest_url

DEFAULT_STAGES = [{"basis_points": 10_000}]


class ReleaseError(ValueError):
    """A release action that is not possible now; the message says why and what to do."""


def validate_stages(stages: object) -> list[str]:
    if not isinstance(stages, list) or not stages:
        return ["stages must be a non-empty list of {'basis_points': 1..10000}"]
    errors = []
    previous = 0
    for i, stage in enumerate(stages):
        if (
            not isinstance(stage, dict)
            or not isinstance(stage.get("basis_points"), int)
            or isinstance(stage.get("basis_points"), bool)
        ):
            errors.append(
                f"stage {i + 1}: needs an integer 'basis_points' (1..10000; 10000 = 100%)"
            )
            continue
        bp = stage["basis_points"]
        if not 1 <= bp <= 10_000:
            errors.append(f"stage {i + 1}: basis_points {bp} is outside 1..10000")
        elif bp <= previous:
            errors.append(
                f"stage {i + 1}: basis_points {bp} must be larger than the previous stage's {previous}"
            )
        previous = max(previous, bp)
    if not errors and stages[-1]["basis_points"] != 10_000:
        errors.append("the last stage must reach 10000 basis points (100% of the target)")
    return errors


def create_release(
    version: TaskVersion,
    *,
    target: dict | None = None,
    stages: list[dict] | None = None,
    name: str = "",
    salt: str = "",
    by: AbstractBaseUser | None = None,
) -> Release:
    target = target or {}
    stages = DEFAULT_STAGES if stages is None else stages
    errors = targeting.validate_target(target) + validate_stages(stages)
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
            stages=stages,
            salt=salt or secrets.token_hex(8),
            created_by=by if getattr(by, "is_authenticated", False) else None,
        )
        audit(
            task.app, by, "release.create", "release", str(release.pk), {"version": version.number}
        )
    return release


def _device_group_ids(device: Device, groups: list[DeviceGroup]) -> frozenset[int]:
    ids = set()
    for group in groups:
        if group.kind == GroupKind.DYNAMIC:
            if targeting.matches(group.filter, device.uid, device.attrs()):
                ids.add(group.pk)
        elif any(m.pk == device.pk for m in group.members.all()):
            ids.add(group.pk)
    return frozenset(ids)


def _targeted_devices(release: Release) -> list[Device]:
    """Every enrolled device of the app inside the release's target (any bucket)."""
    target = release.target
    devices = Device.objects.filter(app=release.app)
    if "device_ids" in target:
        devices = devices.filter(uid__in=target["device_ids"])
    groups = list(
        DeviceGroup.objects.filter(pk__in=target.get("groups", [])).prefetch_related("members")
    )
    static_members: dict[int, set[int]] = {
        g.pk: {m.pk for m in g.members.all()} for g in groups if g.kind == GroupKind.STATIC
    }
    result = []
    for device in devices.iterator(chunk_size=2000):
        group_ids = frozenset(
            g.pk
            for g in groups
            if (
                device.pk in static_members[g.pk]
                if g.kind == GroupKind.STATIC
                else targeting.matches(g.filter, device.uid, device.attrs())
            )
        )
        if targeting.matches(target, device.uid, device.attrs(), group_ids):
            result.append(device)
    return result


@dataclass
class Notice:
    """What is published after commit: the doorbell frame and the devices it is for."""

    task: str
    version: int
    digest: str
    device_uids: list[str]


def _admit_stage(release: Release) -> list[str]:
    """Create deployments for targeted devices whose bucket is inside the current stage.

    Returns the uids of the devices admitted now (they get the doorbell).
    """
    threshold = release.stage_basis_points()
    existing = set(Deployment.objects.filter(release=release).values_list("device_id", flat=True))
    now = timezone.now()
    new = []
    for device in _targeted_devices(release):
        if device.pk in existing:
            continue
        b = targeting.bucket(release.salt, device.uid)
        if b < threshold:
            new.append(
                Deployment(
                    release=release,
                    device=device,
                    bucket=b,
                    stage=release.current_stage,
                    state=DeploymentState.NOTIFIED if device.online else DeploymentState.PENDING,
                    notified_at=now if device.online else None,
                )
            )
    Deployment.objects.bulk_create(new, batch_size=2000)
    return [d.device.uid for d in new if d.state == DeploymentState.NOTIFIED]


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


def start_release(release: Release, *, by: AbstractBaseUser | None = None) -> Release:
    with transaction.atomic():
        release = (
            Release.objects.select_for_update().select_related("task", "version").get(pk=release.pk)
        )
        if release.state != ReleaseState.DRAFT:
            raise ReleaseError(
                f"release {release.pk} is {release.state}; only a draft release can be started"
            )
        now = timezone.now()
        release.state = ReleaseState.RUNNING
        release.started_at = now
        release.stage_started_at = now
        release.current_stage = 0
        release.save(update_fields=["state", "started_at", "stage_started_at", "current_stage"])
        uids = _admit_stage(release)
        if len(release.stages) == 1:
            # A single full stage has nothing left to advance to: every later device joins on connect.
            pass
        audit(release.app, by, "release.start", "release", str(release.pk))
        _publish_after_commit(release, uids)
    return release


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
    return deployment


def desired_state(device: Device) -> list[dict]:
    """The task versions this device should run now, newest release per task winning.

    Creates the deployment of a device that joins a running release late (enrolled or came online
    after the start) when its bucket is inside the current stage.
    """
    releases = list(
        Release.objects.filter(
            app_id=device.app_id, state__in=(*ACTIVE_RELEASE_STATES, ReleaseState.ABORTED)
        )
        .select_related("task", "version")
        .order_by("-started_at", "-id")
    )
    if not releases:
        return []
    deployments = {
        d.release_id: d
        for d in Deployment.objects.filter(device=device, release__in=[r.pk for r in releases])
    }
    group_ids: frozenset[int] | None = None
    chosen: dict[str, tuple[Release, Deployment]] = {}
    for release in releases:
        task_name = release.task.name
        if task_name in chosen:
            continue  # a newer release of this task already decided
        deployment = deployments.get(release.pk)
        if deployment is None and release.state in (ReleaseState.RUNNING, ReleaseState.COMPLETED):
            if group_ids is None:
                group_ids = _device_group_ids(
                    device,
                    list(
                        DeviceGroup.objects.filter(app_id=device.app_id).prefetch_related("members")
                    ),
                )
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
                defaults={
                    "bucket": b,
                    "stage": release.current_stage,
                    "state": DeploymentState.NOTIFIED,
                    "notified_at": timezone.now(),
                },
            )
        if deployment is None:
            continue
        if deployment.state == DeploymentState.PENDING:
            Deployment.objects.filter(pk=deployment.pk, state=DeploymentState.PENDING).update(
                state=DeploymentState.NOTIFIED, notified_at=timezone.now()
            )
        chosen[task_name] = (release, deployment)
    return [
        {
            "task": name,
            "version": release.version.number,
            "digest": release.version.digest,
            "manifest_url": manifest_url(release.version.digest),
            "deployment": deployment.pk,
            "release": release.pk,
        }
        for name, (release, deployment) in sorted(chosen.items())
    ]
