"""Per-socket frame rate, sockets per device token, and revocation, through Channels'
WebsocketCommunicator: every limit answers with an `error` frame before anything closes."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from rest_framework.test import APIClient

from devices.limits import CLOSE_FLOOD, CLOSE_REPLACED, CLOSE_REVOKED
from devices.models import Device
from releases.models import Deployment
from releases.services import create_release, start_release
from tests.cast import client_for
from walle_device import protocol
from walle_web.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


def connect(token: str) -> WebsocketCommunicator:
    return WebsocketCommunicator(
        application, "/ws/device/", headers=[(b"authorization", f"Bearer {token}".encode())]
    )


async def next_frame(comm: WebsocketCommunicator) -> dict:
    return protocol.decode(await comm.receive_from(timeout=10), max_bytes=2**20)


async def closed_with(comm: WebsocketCommunicator) -> int:
    output = await comm.receive_output(timeout=10)
    assert output["type"] == "websocket.close", output
    return output.get("code")


def ping(t: float) -> str:
    return json.dumps(protocol.message("ping", t=t))


def test_a_flooding_socket_is_told_to_slow_down_then_closed(cast, settings):
    settings.WALLE_DEVICE_FRAMES_PER_SECOND = 0.001  # no refill during the test
    settings.WALLE_DEVICE_FRAME_BURST = 3

    async def go():
        comm = connect(cast.tokens[cast.devices[0].uid])
        assert (await comm.connect())[0]
        for i in range(3):
            await comm.send_to(text_data=ping(i))
            assert (await next_frame(comm))["type"] == "pong"
        for i in range(3):  # refused unread, each with a reason and when to retry
            await comm.send_to(text_data=ping(10 + i))
            error = await next_frame(comm)
            assert (error["type"], error["code"]) == ("error", "rate_limited")
            assert error["retry_after"] > 0
        await comm.send_to(text_data=ping(99))  # past a whole burst of refusals
        assert (await next_frame(comm))["code"] == "rate_limited"
        assert await closed_with(comm) == CLOSE_FLOOD

    asyncio.run(go())


def test_one_token_holds_at_most_the_allowed_sockets(cast, settings):
    settings.WALLE_MAX_SOCKETS_PER_DEVICE = 2
    token = cast.tokens[cast.devices[0].uid]

    async def go():
        first, second, third = connect(token), connect(token), connect(token)
        for comm in (first, second, third):
            assert (await comm.connect())[0]
        notice = await next_frame(first)
        assert (notice["type"], notice["code"]) == ("error", "replaced")
        assert await closed_with(first) == CLOSE_REPLACED
        for comm in (second, third):
            await comm.send_to(text_data=ping(1))
            assert (await next_frame(comm))["type"] == "pong"
            await comm.disconnect()

    asyncio.run(go())


def test_an_admin_retires_a_device_its_socket_closes_and_its_history_stays(cast):
    release = start_release(create_release(cast.version))
    device = cast.devices[0]
    token = cast.tokens[device.uid]

    async def go():
        comm = connect(token)
        assert (await comm.connect())[0]
        await comm.send_to(text_data=json.dumps(protocol.message("hello", attrs={}, current={})))
        assert (await next_frame(comm))["type"] == "desired"

        def retire(who: str) -> int:
            return (
                client_for(getattr(cast, who))
                .post(f"/api/v1/devices/{device.uid}/retire/")
                .status_code
            )

        assert await database_sync_to_async(retire)("operator") == 403
        assert await database_sync_to_async(retire)("outsider") == 404
        assert await database_sync_to_async(retire)("admin") == 200
        error = await next_frame(comm)
        assert (error["type"], error["code"]) == ("error", "revoked")
        assert await closed_with(comm) == CLOSE_REVOKED
        again, _ = await connect(token).connect()
        assert not again

    asyncio.run(go())
    retired = Device.objects.get(pk=device.pk)
    assert retired.retired_at is not None
    assert Deployment.objects.filter(device=retired, release=release).exists()
    tunnel = APIClient().post(
        "/api/v1/tunnel/", {"items": []}, format="json", HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    assert tunnel.status_code == 401
    listed = client_for(cast.admin).get("/api/v1/devices/?retired=true").json()["results"]
    assert [d["uid"] for d in listed] == [device.uid]


def test_the_console_retires_devices_for_admins_only(cast, client):
    device = cast.devices[1]
    url = f"/apps/{cast.app.slug}/fleet/{device.uid}/retire/"
    client.force_login(cast.operator)
    assert client.post(url).status_code == 403
    client.force_login(cast.admin)
    page = client.get(f"/apps/{cast.app.slug}/fleet/{device.uid}/")
    assert b"Retire device" in page.content
    assert client.post(url).status_code == 302
    device.refresh_from_db()
    assert device.retired_at is not None and device.token_hash == ""
    assert b"retired" in client.get(f"/apps/{cast.app.slug}/fleet/{device.uid}/").content
