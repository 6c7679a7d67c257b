"""Live updates for watchers of a release (the console dashboard), published after commit."""

from __future__ import annotations

import logging

from django.db import transaction
from django.dispatch import Signal

log = logging.getLogger(__name__)


def release_group(release_id: int) -> str:
    return f"console.release.{release_id}"


def app_group(app_id: int) -> str:
    return f"console.app.{app_id}"


def _publish(release_id: int, app_id: int, kind: str) -> None:
    from walle_web.relay import group_send

    message = {"type": "release.update", "release": release_id, "kind": kind}
    try:
        group_send(release_group(release_id), message, skip_if_empty=True)
        group_send(app_group(app_id), message, skip_if_empty=True)
    except Exception:  # a watcher's live view is best effort; the database is the truth
        log.warning("could not publish the update of release %s", release_id, exc_info=True)


def release_changed(release_id: int, app_id: int, kind: str = "state") -> None:
    """Tell watchers, once the current transaction commits, that a release or its counts changed."""
    transaction.on_commit(lambda: _publish(release_id, app_id, kind))


# Sent inside the transaction that decided an outcome people subscribe to (a ReleaseEvent):
# receivers (the alerts app) write what they need in the same transaction, so an outcome and
# its notifications commit together or not at all. Keyword arguments: release, event, detail.
release_outcome = Signal()


def release_event(release, event: str, **detail) -> None:
    """Announce a release outcome (paused by a gate, failed, devices timed out, completed)."""
    release_outcome.send(sender=type(release), release=release, event=event, detail=detail)


# Sent by the rollout worker on every pass (`manage.py rolloutd`), so apps above releases can
# do periodic work in the worker without releases importing them (alerts deliver their outbox).
worker_tick = Signal()
