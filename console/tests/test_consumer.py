"""The console websocket: session auth, the viewer+ rule, and fresh counts after a report."""

from __future__ import annotations

import asyncio
import time

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from releases import services as releases
from releases.reports import record_report
from walle_web.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


def session_headers(user) -> list[tuple[bytes, bytes]]:
    client = Client()
    client.force_login(user)
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
    return [(b"cookie", cookie.encode()), (b"origin", b"http://testserver")]


def started_release(cast):
    release = releases.create_release(cast.version, by=cast.operator)
    return releases.start_release(release, by=cast.operator)


async def connect(user, release_id: int, headers=None):
    headers = headers if headers is not None else await sync_to_async(session_headers)(user)
    comm = WebsocketCommunicator(application, f"/ws/console/releases/{release_id}/", headers)
    connected, code = await comm.connect()
    return comm, connected, code


@pytest.mark.parametrize("who", ["viewer", "operator", "admin"])
def test_members_of_the_app_watch_a_release(cast, who):
    release = started_release(cast)

    async def go():
        comm, connected, _ = await connect(getattr(cast, who), release.pk)
        assert connected
        first = await comm.receive_json_from(timeout=3)
        assert first["type"] == "release.snapshot" and first["state"] == "running"
        assert first["counts"]["total"] == len(cast.devices)
        assert first["stages"][0]["counts"]["total"] == len(cast.devices)
        await comm.disconnect()

    asyncio.run(go())


def test_an_outsider_of_another_app_is_refused(cast):
    release = started_release(cast)

    async def go():
        _comm, connected, code = await connect(cast.outsider, release.pk)
        assert not connected and code == 4403

    asyncio.run(go())


def test_an_anonymous_socket_is_refused(cast):
    release = started_release(cast)

    async def go():
        _comm, connected, code = await connect(
            None, release.pk, headers=[(b"origin", b"http://testserver")]
        )
        assert not connected and code == 4403

    asyncio.run(go())


def test_a_socket_from_a_foreign_origin_is_refused(cast):
    release = started_release(cast)

    async def go():
        headers = await sync_to_async(session_headers)(cast.viewer)
        headers = [h for h in headers if h[0] != b"origin"] + [(b"origin", b"https://evil.example")]
        _comm, connected, _ = await connect(cast.viewer, release.pk, headers=headers)
        assert not connected

    asyncio.run(go())


def test_a_burst_of_reports_arrives_as_one_fresh_snapshot_within_a_second(cast):
    release = started_release(cast)

    async def go():
        comm, connected, _ = await connect(cast.viewer, release.pk)
        assert connected
        await comm.receive_json_from(timeout=3)
        deployments = await sync_to_async(
            lambda: list(release.deployments.select_related("device"))
        )()
        started = time.monotonic()
        for d in deployments:
            await sync_to_async(record_report)(d.device, d.pk, "downloading")
            await sync_to_async(record_report)(d.device, d.pk, "succeeded")
        snapshots = []
        while True:
            snap = await comm.receive_json_from(timeout=2)
            snapshots.append(snap)
            if snap["counts"]["succeeded"] == len(deployments):
                break
        assert time.monotonic() - started < 1.5
        # 2 reports x 4 devices were coalesced into a few snapshots, not one per report.
        assert len(snapshots) < 2 * len(deployments)
        assert await comm.receive_nothing(timeout=0.5)
        await comm.disconnect()

    asyncio.run(go())


def test_the_release_list_hears_which_releases_of_its_app_changed(cast):
    release = started_release(cast)

    async def go():
        headers = await sync_to_async(session_headers)(cast.viewer)
        comm = WebsocketCommunicator(
            application, f"/ws/console/apps/{cast.app.slug}/releases/", headers
        )
        connected, _ = await comm.connect()
        assert connected
        d = await sync_to_async(lambda: release.deployments.select_related("device").first())()
        await sync_to_async(record_report)(d.device, d.pk, "downloading")
        msg = await comm.receive_json_from(timeout=2)
        assert msg == {"type": "releases.changed", "releases": [release.pk]}
        await comm.disconnect()
        outsider = await sync_to_async(session_headers)(cast.outsider)
        comm = WebsocketCommunicator(
            application, f"/ws/console/apps/{cast.app.slug}/releases/", outsider
        )
        connected, code = await comm.connect()
        assert not connected and code == 4403

    asyncio.run(go())
