"""The device websocket through Channels' WebsocketCommunicator; every server message is
validated against walle_device.protocol."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.db import database_sync_to_async
from channels.layers import InMemoryChannelLayer, get_channel_layer
from channels.testing import WebsocketCommunicator

from devices.push import NOTICE_GROUP
from releases.models import Deployment
from releases.services import create_release, start_release
from tests.live import apoll
from walle_device import protocol
from walle_web.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


class Communicator(WebsocketCommunicator):
    async def connect(self, timeout: float = 10):
        # The token check is a trip through the ingest writer: give a loaded machine time.
        return await super().connect(timeout)


def connect(token: str | None) -> WebsocketCommunicator:
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
    return Communicator(application, "/ws/device/", headers=headers)


async def receive(comm: WebsocketCommunicator) -> dict:
    msg = protocol.decode(await comm.receive_from(timeout=5))
    assert msg["type"] in protocol.SERVER_TO_DEVICE
    return msg


async def send(comm: WebsocketCommunicator, mtype: str, **fields) -> dict:
    await comm.send_to(text_data=json.dumps(protocol.message(mtype, **fields)))
    return await receive(comm)


def run(coro):
    return asyncio.run(coro)


def test_a_connection_without_a_valid_token_is_refused(cast):
    async def go():
        for token in (None, "dev-nope.secret", cast.tokens[cast.devices[0].uid] + "x"):
            connected, _ = await connect(token).connect()
            assert not connected

    run(go())


def test_hello_is_answered_with_the_desired_state(cast):
    release = start_release(create_release(cast.version))
    device = cast.devices[0]

    async def go():
        comm = connect(cast.tokens[device.uid])
        assert (await comm.connect())[0]
        desired = await send(comm, "hello", attrs={"model": "Pixel 8"}, current={}, id="h1")
        assert desired["type"] == "desired" and desired["ref"] == "h1"
        [entry] = desired["tasks"]
        assert (entry["task"], entry["version"], entry["release"]) == (
            "item-features",
            1,
            release.pk,
        )
        ack = await send(
            comm, "report", id="r1", deployment=entry["deployment"], state="downloading"
        )
        assert ack == protocol.message("ack", ref="r1")
        again = await send(
            comm, "report", id="r1", deployment=entry["deployment"], state="downloading"
        )
        assert again["type"] == "ack"
        await comm.disconnect()
        return entry["deployment"]

    dep_id = run(go())
    dep = Deployment.objects.get(pk=dep_id)
    assert dep.state == "downloading" and dep.attempts == 1 and dep.events.count() == 1


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", "malformed"),
        ('{"type": "launch_missiles", "v": 1}', "unknown_type"),
        ('{"type": "notify", "v": 1, "task": "t", "version": 1, "digest": "d"}', "unexpected_type"),
        ('{"type": "report", "v": 1, "id": "x", "deployment": 1}', "invalid"),
        ('{"type": "hello", "v": 7, "attrs": {}, "current": {}}', "unsupported_version"),
    ],
)
def test_bad_frames_get_an_error_and_the_connection_stays_open(cast, frame, code):
    async def go():
        comm = connect(cast.tokens[cast.devices[0].uid])
        await comm.connect()
        await comm.send_to(text_data=frame)
        error = await receive(comm)
        assert (error["type"], error["code"]) == ("error", code)
        pong = await send(comm, "ping", t=1.5)
        assert pong == protocol.message("pong", t=1.5)
        await comm.disconnect()

    run(go())


def test_oversized_frames_are_refused(cast, settings):
    settings.WALLE_MAX_FRAME_BYTES = 1000

    async def go():
        comm = connect(cast.tokens[cast.devices[0].uid])
        await comm.connect()
        await comm.send_to(text_data=json.dumps(protocol.message("ping", t=1.0)) + " " * 2000)
        error = await receive(comm)
        assert error["code"] == "too_large"
        await comm.disconnect()

    run(go())


def test_a_report_on_a_foreign_deployment_is_rejected(cast):
    release = start_release(create_release(cast.version))
    foreign = Deployment.objects.get(release=release, device=cast.devices[1])

    async def go():
        comm = connect(cast.tokens[cast.devices[0].uid])
        await comm.connect()
        error = await send(comm, "report", id="r9", deployment=foreign.pk, state="succeeded")
        assert (error["type"], error["code"], error["ref"]) == ("error", "rejected", "r9")
        await comm.disconnect()

    run(go())
    foreign.refresh_from_db()
    assert foreign.state == "pending"


def test_starting_a_release_rings_the_connected_devices_once(cast):
    async def go():
        comms = []
        for device in cast.devices[:3]:
            comm = connect(cast.tokens[device.uid])
            await comm.connect()
            await send(comm, "hello", attrs={}, current={})
            comms.append(comm)
        release = await database_sync_to_async(
            lambda: start_release(
                create_release(cast.version, target={"models": ["Pixel 8", "Galaxy S24"]})
            )
        )()
        notices = []
        for comm, device in zip(comms, cast.devices[:3], strict=True):
            if device.model in ("Pixel 8", "Galaxy S24"):
                notices.append(await receive(comm))
            else:
                assert await comm.receive_nothing(timeout=0.3)
        for comm in comms:
            await comm.disconnect()
        return release, notices

    release, notices = run(go())
    assert (
        notices
        == [protocol.message("notify", task="item-features", version=1, digest=cast.version.digest)]
        * 2
    )
    assert set(Deployment.objects.filter(release=release).values_list("state", flat=True)) == {
        "notified"
    }


class SlowSubscriptionLayer(InMemoryChannelLayer):
    """An in-process layer whose subscriptions wait until the test opens `gate`, as a remote
    Redis's may take a while."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.gate = asyncio.Event()
        self.subscribed = False

    async def group_add(self, group: str, channel: str) -> None:
        await self.gate.wait()
        await super().group_add(group, channel)
        self.subscribed = True


def test_a_hello_is_answered_only_once_the_socket_gets_notices(cast, settings):
    """The client's `synced` rests on this: a notice published right after the answer rings."""
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": f"{__name__}.{SlowSubscriptionLayer.__qualname__}"}
    }
    device = cast.devices[0]

    async def go():
        layer = get_channel_layer()
        comm = connect(cast.tokens[device.uid])
        assert (await comm.connect())[0]
        await comm.send_to(
            text_data=json.dumps(protocol.message("hello", attrs={}, current={}, id="h1"))
        )
        # Not subscribed yet: the hello waits (it would be answered in a few milliseconds).
        assert await comm.receive_nothing(timeout=0.5)
        layer.gate.set()
        desired = await receive(comm)
        assert desired["type"] == "desired" and layer.subscribed
        notice = {"app": device.app_id, "task": "t", "version": 2, "digest": "d" * 64}
        await layer.group_send(
            NOTICE_GROUP, {"type": "release.notice", **notice, "device_uids": [device.uid]}
        )
        ring = await receive(comm)
        await comm.disconnect()
        return ring

    assert run(go()) == protocol.message("notify", task="t", version=2, digest="d" * 64)


def test_uploads_are_stored_once_and_acked_every_time(cast):
    item = {"key": "k-1", "task": "item-features", "version": 1, "payload": {"viewed": 3}}

    async def go():
        comm = connect(cast.tokens[cast.devices[0].uid])
        await comm.connect()
        first = await send(comm, "upload", id="u1", items=[item])
        second = await send(comm, "upload", id="u2", items=[item, {**item, "key": "k-2"}])
        await comm.disconnect()
        return first, second

    first, second = run(go())
    assert first["keys"] == ["k-1"] and second["keys"] == ["k-1", "k-2"]
    from devices.models import Result

    assert sorted(Result.objects.values_list("key", flat=True)) == ["k-1", "k-2"]


def test_presence_follows_the_connection(cast):
    device = cast.devices[0]

    def is_online() -> bool:
        return type(device).objects.get(pk=device.pk).online

    async def go():
        comm = connect(cast.tokens[device.uid])
        await comm.connect()
        # Presence goes through the ingest writer, ahead of the hello in its queue: once the
        # hello is answered, the connection is recorded.
        await send(comm, "hello", attrs={}, current={})
        online = await database_sync_to_async(is_online)()
        await comm.disconnect()
        await apoll(  # the disconnect is applied by the writer's next batch
            database_sync_to_async(is_online),
            until=lambda now_online: not now_online,
            what="the disconnect to mark the device offline",
            timeout=5,
            interval=0.05,
        )
        return online

    assert run(go()) is True
    device.refresh_from_db()
    assert device.online is False and device.last_seen is not None


def test_an_overloaded_server_says_try_again_later_not_forbidden(cast, settings):
    settings.WALLE_INGEST_QUEUE = 0  # nothing fits: not even the handshake's token check

    async def go():
        comm = connect(cast.tokens[cast.devices[0].uid])
        connected, _ = await comm.connect()
        assert connected  # accepted, so it can say why it closes: 1013, not a 403
        busy = await receive(comm)
        assert (busy["type"], busy["code"]) == ("error", "busy") and busy["retry_after"] >= 1
        assert await comm.receive_output(timeout=5) == {"type": "websocket.close", "code": 1013}

    run(go())


def test_frames_on_a_deferred_handshake_are_dropped(cast, settings):
    """A device sends hello as soon as its socket opens, racing the server's 1013 close: that
    hello belongs to no device and must not reach the writer (in a 10k reconnect storm such
    hellos failed whole batches, which the writer then applied one message at a time)."""
    settings.WALLE_CONNECT_BUDGET_S = 0  # no handshake can be taken in time

    async def go():
        from devices.ingest import ingest

        comm = connect(cast.tokens[cast.devices[0].uid])
        assert (await comm.connect())[0]
        assert (await receive(comm))["code"] == "busy"
        writer = ingest()
        applied = writer.applied
        await comm.send_to(
            text_data=json.dumps(protocol.message("hello", attrs={}, current={}, id="h1"))
        )
        assert await comm.receive_output(timeout=5) == {"type": "websocket.close", "code": 1013}
        assert await comm.receive_nothing(timeout=0.3)  # no answer: nothing was queued
        assert writer.pending == 0 and writer.applied == applied

    run(go())


def test_a_full_queue_answers_retry_after_and_stores_nothing(cast):
    release = start_release(create_release(cast.version))
    device = cast.devices[0]
    dep = Deployment.objects.get(release=release, device=device)

    async def go():
        from devices.ingest import ingest

        comm = connect(cast.tokens[device.uid])
        assert (await comm.connect())[0]
        ingest().max_pending = 0
        busy = await send(comm, "report", id="r1", deployment=dep.pk, state="downloading")
        assert busy["code"] == "busy" and busy["ref"] == "r1" and busy["retry_after"] > 0
        ingest().max_pending = 100
        ack = await send(comm, "report", id="r1", deployment=dep.pk, state="downloading")
        assert ack == protocol.message("ack", ref="r1")
        await comm.disconnect()

    run(go())
    assert dep.events.count() == 1


def test_a_batch_that_cannot_commit_is_not_acked(cast, monkeypatch):
    from django.db import OperationalError

    from releases import reports

    release = start_release(create_release(cast.version))
    device = cast.devices[0]
    dep = Deployment.objects.get(release=release, device=device)

    def locked(reports):
        raise OperationalError("database is locked")

    async def go():
        comm = connect(cast.tokens[device.uid])
        assert (await comm.connect())[0]
        monkeypatch.setattr(reports, "record_reports", locked)
        busy = await send(comm, "report", id="r1", deployment=dep.pk, state="downloading")
        assert busy["code"] == "busy" and busy["ref"] == "r1" and busy["retry_after"] > 0
        await comm.disconnect()

    run(go())
    dep.refresh_from_db()
    assert dep.state == "pending" and dep.events.count() == 0


def test_messages_of_many_devices_share_one_transaction(cast):
    release = start_release(create_release(cast.version))

    async def go():
        from devices.ingest import ingest

        comms = []
        for device in cast.devices:
            comm = connect(cast.tokens[device.uid])
            assert (await comm.connect())[0]
            comms.append((comm, device))
        uids = [d.uid for d in cast.devices]
        online = database_sync_to_async(
            lambda: type(cast.devices[0]).objects.filter(uid__in=uids, online=True).count()
        )
        await apoll(  # the connections' presence batch is done
            online,
            until=lambda n: n == len(uids),
            what=f"all {len(uids)} devices online",
            interval=0.05,
        )
        # The writer now waits this long for company after a first message: all four
        # hellos arrive meanwhile and go in one batch.
        ingest().window_s = 2.0
        batches = ingest().batches
        for comm, _ in comms:  # sent together: one batch, one commit
            await comm.send_to(
                text_data=json.dumps(protocol.message("hello", attrs={}, current={}, id="h"))
            )
        answers = [protocol.decode(await comm.receive_from(timeout=10)) for comm, _ in comms]
        assert ingest().batches == batches + 1
        for comm, _ in comms:
            await comm.disconnect()
        return answers

    answers = run(go())
    assert {a["tasks"][0]["release"] for a in answers} == {release.pk}
