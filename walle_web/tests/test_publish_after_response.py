"""What a request publishes goes out after its response: a release start answers its caller
first and rings the connected devices right after (devices.publish.HeldPublishes). Nothing
held is lost, also when the request fails. Through the real ASGI application."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from rest_framework.authtoken.models import Token

from devices import publish
from releases.services import create_release
from walle_device import protocol
from walle_web.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


def http_scope(method: str, path: str, token: str) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"authorization", f"Token {token}".encode()), (b"host", b"testserver")],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }


async def call(scope: dict, on_message) -> None:
    sent = False

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.sleep(3600)

    await application(scope, receive, on_message)


def test_a_release_start_answers_before_it_rings_the_devices(cast):
    device = cast.devices[0]
    token = Token.objects.create(user=cast.operator).key
    release = create_release(cast.version)

    async def go():
        comm = WebsocketCommunicator(
            application,
            "/ws/device/",
            headers=[(b"authorization", f"Bearer {cast.tokens[device.uid]}".encode())],
        )
        assert (await comm.connect(timeout=10))[0]
        await comm.send_to(text_data=json.dumps(protocol.message("hello", attrs={}, current={})))
        assert protocol.decode(await comm.receive_from(timeout=5))["type"] == "desired"
        answered: list[tuple[int, bool]] = []
        status = 0

        async def on_message(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif not message.get("more_body"):
                # The whole response is out: has the device been rung already?
                answered.append((status, comm.output_queue.empty()))

        await call(http_scope("POST", f"/api/v1/releases/{release.pk}/start/", token), on_message)
        notice = protocol.decode(await comm.receive_from(timeout=5))
        await comm.disconnect()
        return answered, notice

    answered, notice = asyncio.run(go())
    assert answered == [(200, True)]
    assert notice == protocol.message(
        "notify", task="item-features", version=1, digest=cast.version.digest
    )


def test_held_publishes_go_out_in_order_once_and_none_are_lost():
    async def go():
        loop = asyncio.get_running_loop()
        publish.bind_server_loop(loop)
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add("walle.notices", channel)
        held = publish.HeldPublishes()
        token = publish.HELD.set(held)
        try:
            for app in (1, 2, 3):
                publish.group_send("walle.notices", {"type": "release.changed", "app": app})
        finally:
            publish.HELD.reset(token)
        await asyncio.sleep(0.05)
        assert layer.channels.get(channel) is None or layer.channels[channel].empty()
        held.release()
        held.release()  # idempotent: nothing is sent twice
        got = [(await layer.receive(channel))["app"] for _ in range(3)]
        # Once released, later publishes in the same context are not held.
        publish.HELD.set(held)
        publish.group_send("walle.notices", {"type": "release.changed", "app": 4})
        got.append((await layer.receive(channel))["app"])
        await asyncio.sleep(0.05)
        assert layer.channels.get(channel) is None or layer.channels[channel].empty()
        await layer.group_discard("walle.notices", channel)
        return got

    assert asyncio.run(go()) == [1, 2, 3, 4]


def test_a_request_that_fails_still_publishes_what_it_committed(cast, monkeypatch):
    """A view that publishes (after commit) and then fails: its response is a 500, and the
    held publish still goes out."""
    device = cast.devices[0]
    token = Token.objects.create(user=cast.operator).key
    release = create_release(cast.version)
    from releases.api import views

    real = views.ReleaseViewSet._operate

    def operate_then_fail(self, request, verb, **kwargs):
        real(self, request, verb, **kwargs)
        raise RuntimeError("after the commit")

    monkeypatch.setattr(views.ReleaseViewSet, "_operate", operate_then_fail)

    async def go():
        comm = WebsocketCommunicator(
            application,
            "/ws/device/",
            headers=[(b"authorization", f"Bearer {cast.tokens[device.uid]}".encode())],
        )
        assert (await comm.connect(timeout=10))[0]
        await comm.send_to(text_data=json.dumps(protocol.message("hello", attrs={}, current={})))
        await comm.receive_from(timeout=5)
        statuses = []

        async def on_message(message):
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await call(http_scope("POST", f"/api/v1/releases/{release.pk}/start/", token), on_message)
        notice = protocol.decode(await comm.receive_from(timeout=5))
        await comm.disconnect()
        return statuses, notice

    statuses, notice = asyncio.run(go())
    assert statuses == [500]
    assert notice["type"] == "notify"
