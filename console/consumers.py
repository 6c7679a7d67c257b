"""The console's live socket: a release dashboard subscribes to its release's counts.

The database is the truth; a `release.update` published after commit only says "look again".
Bursts (a stage of devices reporting at once) are coalesced into one fresh snapshot per window.
"""

from __future__ import annotations

import asyncio

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from accounts.choices import Role
from accounts.models import App
from accounts.permissions import has_role
from releases.events import app_group, release_group
from releases.gates import explain
from releases.models import Release
from releases.monitoring import deployment_counts, running_now, stage_breakdown

# Send at most one snapshot per window; the first update of a burst waits this long, so the
# dashboard is never more than a fraction of a second behind a report.
COALESCE_SECONDS = 0.25


def _load(user, release_id: int) -> Release | None:
    release = Release.objects.filter(pk=release_id).select_related("app").first()
    if release is None or not has_role(user, release.app, Role.VIEWER):
        return None
    return release


def snapshot(release_id: int) -> dict | None:
    release = Release.objects.filter(pk=release_id).first()
    if release is None:
        return None
    return {
        "type": "release.snapshot",
        "release": release.pk,
        "state": release.state,
        "current_stage": release.current_stage,
        "reason": release.reason,
        "counts": deployment_counts(release),
        # One grouped query; keeps the stage cards as live as the totals.
        "stages": stage_breakdown(release),
        # What the current stage waits for (a few counts), as live as the counts.
        "explain": explain(release),
        "running": running_now(release),
    }


class ReleaseConsumer(AsyncJsonWebsocketConsumer):
    release_id: int | None = None
    _flush: asyncio.Task | None = None
    _dirty = False

    async def connect(self) -> None:
        user = self.scope.get("user")
        release_id = int(self.scope["url_route"]["kwargs"]["release_id"])
        release = await database_sync_to_async(_load)(user, release_id)
        if release is None:
            # Same answer for "no such release" and "not yours": nothing to learn by probing.
            await self.close(code=4403)
            return
        self.release_id = release.pk
        await self.channel_layer.group_add(release_group(release.pk), self.channel_name)
        await self.accept()
        await self.send_snapshot()

    async def disconnect(self, code: int) -> None:
        if self.release_id is not None:
            await self.channel_layer.group_discard(
                release_group(self.release_id), self.channel_name
            )
        if self._flush is not None:
            self._flush.cancel()

    async def receive_json(self, content, **kwargs) -> None:
        if isinstance(content, dict) and content.get("type") == "refresh":
            await self.send_snapshot()

    async def release_update(self, message: dict) -> None:
        self._dirty = True
        if self._flush is None or self._flush.done():
            self._flush = asyncio.ensure_future(self._flush_later())

    async def _flush_later(self) -> None:
        # An update that lands while a snapshot is being read marks it dirty again, so the
        # last report of a burst is always reflected.
        while self._dirty:
            await asyncio.sleep(COALESCE_SECONDS)
            self._dirty = False
            await self.send_snapshot()

    async def send_snapshot(self) -> None:
        data = await database_sync_to_async(snapshot)(self.release_id)
        if data is None:
            await self.close(code=4404)
            return
        await self.send_json(data)


def _load_app(user, slug: str) -> App | None:
    app = App.objects.filter(slug=slug).first()
    if app is None or not has_role(user, app, Role.VIEWER):
        return None
    return app


class AppReleasesConsumer(AsyncJsonWebsocketConsumer):
    """Release lists of one app: which releases changed, coalesced; the page re-reads them."""

    app_id: int | None = None
    _flush: asyncio.Task | None = None

    async def connect(self) -> None:
        slug = self.scope["url_route"]["kwargs"]["slug"]
        app = await database_sync_to_async(_load_app)(self.scope.get("user"), slug)
        if app is None:
            await self.close(code=4403)
            return
        self.app_id = app.pk
        self._changed: set[int] = set()
        await self.channel_layer.group_add(app_group(app.pk), self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if self.app_id is not None:
            await self.channel_layer.group_discard(app_group(self.app_id), self.channel_name)
        if self._flush is not None:
            self._flush.cancel()

    async def release_update(self, message: dict) -> None:
        self._changed.add(int(message["release"]))
        if self._flush is None or self._flush.done():
            self._flush = asyncio.ensure_future(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(COALESCE_SECONDS * 2)
        changed, self._changed = sorted(self._changed), set()
        await self.send_json({"type": "releases.changed", "releases": changed})
