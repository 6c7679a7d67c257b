"""What each device runs, from its reports: one row per (device, task) in `RunningVersion`.

A device's hello says what it had when it connected; the reports that follow (activated,
succeeded, failed after activation) and rollbacks change that without a new hello. The fleet,
its filters, the device page and the release pages read these rows instead.

Two entry points, both called inside the transaction that applied the reports or the
rollback, and both taking many at once so a batched ingest path can call them once per batch:

- `apply_running_version(transitions)`: deployments that moved to installed, succeeded or
  failed. A device that switched back through a rollback release also leaves the release it
  undid: that release's deployment becomes `rolled_back`, so the release shows the rollback.
- `rollback_ordered(release, version)`: a rollback of `release` to `version` was ordered;
  its devices show "rolling back" until they report the switch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.utils import timezone

from releases.choices import DeploymentState, RunningState
from releases.events import release_changed
from releases.models import Deployment, DeploymentEvent, Release, RunningVersion
from tasks.models import TaskVersion

# States after which the device has the release's version active (or failed running it).
_RUNNING_REPORTS = (DeploymentState.INSTALLED, DeploymentState.SUCCEEDED, DeploymentState.FAILED)
# Deployments of an undone release that a device's switch back ends. Failed and timed-out
# ones keep their state: the failure is what the release's history must still show.
_UNDONE_BY_SWITCH = (
    DeploymentState.PENDING,
    DeploymentState.NOTIFIED,
    DeploymentState.DOWNLOADING,
    DeploymentState.INSTALLED,
    DeploymentState.SUCCEEDED,
)


@dataclass(frozen=True)
class Transition:
    """A deployment moved to `state` (an accepted report, not a duplicate or a late one)."""

    deployment_id: int
    state: str


_UPDATED = ("version_id", "state", "release_id", "previous_version_id", "rollback_to_id", "since")


def _update_grouped(rows: Iterable[RunningVersion], chunk: int = 900) -> None:
    """Save changed rows with one UPDATE per distinct set of values, not one CASE per row.

    The reports of a release's batch move thousands of devices to the same version, state
    and release at the same instant: bulk_update's per-row CASE made that statement (and its
    parameter list) grow with the batch; grouped, it is one short UPDATE ... WHERE id IN."""
    groups: dict[tuple, list[int]] = {}
    for row in rows:
        values = (*(getattr(row, f) for f in _UPDATED), row.updated_at)
        groups.setdefault(values, []).append(row.pk)
    for values, pks in groups.items():
        fields = dict(zip((*_UPDATED, "updated_at"), values, strict=True))
        for start in range(0, len(pks), chunk):
            RunningVersion.objects.filter(pk__in=pks[start : start + chunk]).update(**fields)


def apply_running_version(transitions: Iterable[Transition]) -> int:
    """Update what devices run from accepted reports, in order; returns the rows changed."""
    relevant = [t for t in transitions if t.state in _RUNNING_REPORTS]
    if not relevant:
        return 0
    deployments = {
        row["id"]: row
        for row in Deployment.objects.filter(pk__in={t.deployment_id for t in relevant}).values(
            "id",
            "device_id",
            "release_id",
            "release__app_id",
            "release__task_id",
            "release__version_id",
            "release__version__number",
            "release__rollback_of_id",
            "release__rollback_of__version_id",
        )
    }
    pairs = {(d["device_id"], d["release__task_id"]) for d in deployments.values()}
    rows = {
        (r.device_id, r.task_id): r
        for r in RunningVersion.objects.filter(
            device_id__in={p[0] for p in pairs}, task_id__in={p[1] for p in pairs}
        )
    }
    now = timezone.now()
    created: dict[tuple[int, int], RunningVersion] = {}
    changed: dict[tuple[int, int], RunningVersion] = {}
    switched_back: list[dict] = []
    for t in relevant:
        d = deployments.get(t.deployment_id)
        if d is None:
            continue
        key = (d["device_id"], d["release__task_id"])
        row = rows.get(key)
        rollback = d["release__rollback_of_id"] is not None
        if t.state == DeploymentState.FAILED:
            # A failure counts only after activation (the device then runs the version and it
            # fails); a failed download leaves the device on what it had.
            if row is not None and row.release_id == d["release_id"]:
                row.state = RunningState.FAILED
                row.updated_at = now
                changed.setdefault(key, row)
            continue
        was = row.version_id if row is not None else None
        if row is None:
            row = RunningVersion(
                device_id=d["device_id"],
                task_id=d["release__task_id"],
                version_id=d["release__version_id"],
                since=now,
            )
            rows[key] = created[key] = row
        elif key not in created:
            changed.setdefault(key, row)
        if was is not None and was != d["release__version_id"]:
            row.previous_version_id = was
            row.version_id = d["release__version_id"]
            row.since = now
        if rollback and was == d["release__rollback_of__version_id"]:
            # The device left the undone version: that is the rollback users look for.
            row.state = RunningState.ROLLED_BACK
        elif row.state == RunningState.ROLLED_BACK and row.release_id == d["release_id"]:
            pass  # succeeded after activating the rollback: still "rolled back"
        elif t.state == DeploymentState.SUCCEEDED:
            row.state = RunningState.SUCCEEDED
        else:
            row.state = RunningState.ACTIVATED
        row.release_id = d["release_id"]
        row.rollback_to_id = None
        row.updated_at = now
        if rollback:
            switched_back.append(d)
    RunningVersion.objects.bulk_create(created.values())
    _update_grouped(changed.values())
    _leave_undone_releases(switched_back, now)
    return len(created) + len(changed)


def _leave_undone_releases(switched_back: list[dict], now) -> None:
    """Devices that switched back through a rollback release leave the release it undid."""
    if not switched_back:
        return
    by_release: dict[int, dict[int, dict]] = {}
    for d in switched_back:
        by_release.setdefault(d["release__rollback_of_id"], {})[d["device_id"]] = d
    for undone_id, devices in by_release.items():
        ids = list(
            Deployment.objects.filter(
                release_id=undone_id, device_id__in=devices, state__in=_UNDONE_BY_SWITCH
            ).values_list("id", "device_id")
        )
        if not ids:
            continue
        Deployment.objects.filter(pk__in=[i for i, _ in ids], state__in=_UNDONE_BY_SWITCH).update(
            state=DeploymentState.ROLLED_BACK, finished_at=now
        )
        DeploymentEvent.objects.bulk_create(
            [
                DeploymentEvent(
                    deployment_id=dep_id,
                    state=DeploymentState.ROLLED_BACK,
                    source="server",
                    message=(
                        f"switched back to v{devices[device_id]['release__version__number']} "
                        f"by release #{devices[device_id]['release_id']}"
                    ),
                )
                for dep_id, device_id in ids
            ],
            ignore_conflicts=True,
        )
        release_changed(undone_id, next(iter(devices.values()))["release__app_id"], "deployment")


def rollback_ordered(release: Release, version: TaskVersion) -> int:
    """`release` is being rolled back to `version`: its devices that run its version are
    expected to switch; they show "rolling back" until they report it."""
    return RunningVersion.objects.filter(
        task_id=release.task_id,
        version_id=release.version_id,
        device_id__in=Deployment.objects.filter(release=release).values("device_id"),
    ).update(rollback_to=version, updated_at=timezone.now())
