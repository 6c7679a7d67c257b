"""Alerts listen to releases (their outcomes) and to the rollout worker (its ticks)."""

from __future__ import annotations

import logging

from django.db import transaction
from django.dispatch import receiver

from alerts import worker
from alerts.choices import AlertEvent
from alerts.services import raise_alert
from releases.events import release_outcome, worker_tick

log = logging.getLogger(__name__)


def _who(by) -> str:
    return by.get_username() if getattr(by, "is_authenticated", False) else "the rollout"


@receiver(release_outcome, dispatch_uid="alerts.release_outcome")
def on_release_outcome(sender, release, event: str, detail: dict, **kwargs) -> None:
    """Runs inside the transaction of the outcome: the alert commits with it."""
    name = f"release #{release.pk} ({release.task.name} v{release.version.number})"
    link = f"/apps/{release.app.slug}/releases/{release.pk}/"
    dedup = None
    if event == AlertEvent.RELEASE_PAUSED_BY_GATE:
        subject = f"{name} paused by a gate in stage {release.current_stage + 1}"
        text = detail.get("reason", "")
    elif event == AlertEvent.RELEASE_FAILED:
        by = _who(detail.get("by"))
        if detail.get("outcome") == "rolled_back":
            subject = f"{name} failed: rolled back to v{detail.get('to_version')} by {by}"
        else:
            subject = f"{name} failed: aborted by {by}"
        text = detail.get("reason", "")
        dedup = f"{event}:{release.pk}"
    elif event == AlertEvent.RELEASE_TIMED_OUT:
        n = detail.get("devices", 0)
        subject = f"{name}: {n} device{'s' * (n != 1)} timed out"
        text = (
            f"{n} device{'s' * (n != 1)} did not finish {detail.get('timeout_s', 0):g} s after "
            "the notice; they count against the stage's error gate."
        )
    elif event == AlertEvent.RELEASE_COMPLETED:
        share = detail.get("succeeded_share")
        subject = f"{name} completed"
        text = (
            f"Every stage passed its gates ({share:.0%} of the last stage succeeded)."
            if share is not None
            else ""
        )
        dedup = f"{event}:{release.pk}"
    else:
        return
    detail = {k: v for k, v in detail.items() if k != "by"} | {"by": _who(detail.get("by"))}
    try:
        # A savepoint: a failing alert must not undo the release's transition with it.
        with transaction.atomic():
            raise_alert(
                release.app,
                event,
                subject,
                text,
                detail=detail,
                release=release,
                link=link,
                dedup_key=dedup,
            )
    except Exception:
        log.exception("could not raise the %s alert of release %s", event, release.pk)


@receiver(worker_tick, dispatch_uid="alerts.worker_tick")
def on_worker_tick(sender, once: bool = False, **kwargs) -> None:
    # A single pass (`rolloutd --once`) checks and delivers in line: a loop thread would
    # outlive the pass it belongs to.
    if once:
        worker.run_once()
    else:
        worker.ensure_running()
