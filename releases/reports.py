"""Device reports of deployments: each moves a deployment forward only, is recorded once,
and a failure makes the rollout check the stage's error gate (releases/rollout.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from devices.models import Device
from releases import running
from releases.choices import (
    DEPLOYMENT_ORDER,
    FINAL_DEPLOYMENT_STATES,
    DeploymentState,
)
from releases.events import (
    deployments_changed,
)
from releases.models import Deployment, DeploymentEvent
from releases.rollout import check_error_gate
from releases.services import (
    ReleaseError,
)


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
