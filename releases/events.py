"""What a release change tells others, after commit: watchers (the console dashboard) and
every server process's cache of the app's releases.

Two kinds of change:

- `release_changed`: the release itself (started, advanced, paused, completed, rolled back).
  The console is told at once, and every process drops its cached releases of the app.
- `deployments_changed`: only counts moved (reports, admissions, timeouts). Thousands of
  these a second during a rollout would flood the dashboard and, worse, block the ingest
  writer on the event loop; in a server process they are coalesced to at most one publish
  per release per `COALESCE_SECONDS`, sent from the loop, never waited for.
"""

from __future__ import annotations

import logging
import threading

from django.db import transaction
from django.dispatch import Signal

from devices.publish import group_send, server_loop
from devices.push import publish_release_changed, release_changed_here

log = logging.getLogger(__name__)
COALESCE_SECONDS = 0.5


def release_group(release_id: int) -> str:
    return f"console.release.{release_id}"


def app_group(app_id: int) -> str:
    return f"console.app.{app_id}"


def _publish(release_id: int, app_id: int, kind: str) -> None:
    message = {"type": "release.update", "release": release_id, "kind": kind}
    try:
        group_send(release_group(release_id), message, skip_if_empty=True)
        group_send(app_group(app_id), message, skip_if_empty=True)
    except Exception:  # a watcher's live view is best effort; the database is the truth
        log.warning("could not publish the update of release %s", release_id, exc_info=True)


def app_releases_changed(app_id: int) -> None:
    """An app's active releases, their targets or its pins/groups changed: drop this
    process's cached copy now (the transaction's own later reads reload it) and every
    process's once the change is committed."""
    release_changed_here(app_id)

    def after_commit() -> None:
        release_changed_here(app_id)
        try:
            publish_release_changed(app_id)
        except Exception:  # the caches' TTL bounds how stale another process can be
            log.warning("could not publish that app %s's releases changed", app_id, exc_info=True)

    transaction.on_commit(after_commit)


def release_changed(release_id: int, app_id: int, kind: str = "state") -> None:
    """Tell watchers and every process, once the transaction commits, that a release changed."""
    if kind != "state":
        deployments_changed(release_id, app_id)
        return
    app_releases_changed(app_id)
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
# `once=True` on a single pass (`rolloutd --once`): do the work in line, start nothing.
worker_tick = Signal()


class _Coalescer:
    """Per process: releases whose counts changed since the last publish, flushed from the
    server's event loop at most every COALESCE_SECONDS."""

    def __init__(self) -> None:
        self._dirty: dict[int, int] = {}
        self._lock = threading.Lock()
        self._scheduled_on = None  # the loop a flush is scheduled on, if any

    def mark(self, release_id: int, app_id: int) -> None:
        loop = server_loop()
        if loop is None:  # no server loop here (rollout worker, a shell): publish now
            _publish(release_id, app_id, "deployment")
            return
        with self._lock:
            self._dirty[release_id] = app_id
            if self._scheduled_on is loop:
                return
            self._scheduled_on = loop
        loop.call_soon_threadsafe(loop.call_later, COALESCE_SECONDS, self._flush)

    def _flush(self) -> None:
        with self._lock:
            dirty, self._dirty = self._dirty, {}
            self._scheduled_on = None
        for release_id, app_id in dirty.items():
            _publish(release_id, app_id, "deployment")


_coalescer = _Coalescer()


def deployments_changed(release_id: int, app_id: int) -> None:
    """Deployment counts of a release moved: the dashboard refreshes, coalesced, after commit."""
    transaction.on_commit(lambda: _coalescer.mark(release_id, app_id))
