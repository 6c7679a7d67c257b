"""An overloaded server defers a device's handshake with close code 1013 (try again later),
through the real daphne: the device hears "busy" with a retry hint, keeps its identity and
comes back later; it never takes the deferral for a bad token.

The server here has a handshake budget of 0 s (WALLE_CONNECT_BUDGET_S), so every handshake
is one the server "cannot take in time". Through channels' test communicator this worked,
but autobahn (under daphne) refuses to send 1013 from its public close call: the
application died with an exception and the socket stayed open until the device's own
timeout, which stretched a 10k reconnect storm to minutes (bench/README.md).
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.live import apoll
from walle_device.enrollment import enroll, ws_url
from walle_device.fleet import build_fleet
from walle_device.vm import TaskVM

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.live(backends=["embedded"], extra_env={"WALLE_CONNECT_BUDGET_S": "0"}),
]


async def _identity(server):
    async with httpx.AsyncClient(timeout=30) as http:
        return await enroll(http, server.url, server.enroll_key, {"os": "linux"})


def test_a_deferred_handshake_closes_with_1013_and_a_retry_hint(server):
    async def scenario():
        identity = await _identity(server)
        frames = []
        async with connect(
            ws_url(server.url),
            additional_headers={"Authorization": f"Bearer {identity.token}"},
            open_timeout=10,
        ) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(10):  # not the client's timeout: the server closes
                    while True:
                        frames.append(json.loads(await ws.recv()))
        return frames, closed.value

    frames, closed = asyncio.run(scenario())
    assert closed.rcvd is not None and closed.rcvd.code == 1013, closed
    [busy] = frames
    assert busy["type"] == "error" and busy["code"] == "busy"
    assert busy["retry_after"] >= 1.0
    for log in server.logs:
        assert "Exception inside application" not in log.read_text()


def test_a_flood_of_deferred_handshakes_with_hostile_frames_leaves_the_server_healthy(server):
    """Many devices at once, each sending garbage, a large frame and a hello into its
    deferred socket: every one is closed with 1013, nothing reaches the application's
    handlers, and the server answers normally afterwards."""

    async def one(token: str) -> int | None:
        try:
            async with connect(
                ws_url(server.url),
                additional_headers={"Authorization": f"Bearer {token}"},
                open_timeout=30,
                max_size=None,
            ) as ws:
                for frame in (
                    "\x00not json{{",
                    json.dumps({"type": "hello", "attrs": {}, "current": {}, "id": "h"}),
                    "x" * 200_000,
                    b"\xff" * 1000,
                ):
                    try:
                        await ws.send(frame)
                    except ConnectionClosed:
                        break
                async with asyncio.timeout(20):
                    while True:
                        await ws.recv()
        except ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd is not None else None
        return None

    async def scenario():
        async with httpx.AsyncClient(timeout=30) as http:
            identities = [
                await enroll(http, server.url, server.enroll_key, {"os": "linux"}) for _ in range(8)
            ]
        # 64 sockets at once, several per device (a device that reconnects in a loop).
        tokens = [identities[i % len(identities)].token for i in range(64)]
        return await asyncio.gather(*(one(tk) for tk in tokens))

    codes = asyncio.run(scenario())
    assert codes == [1013] * len(codes)
    assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200
    for log in server.logs:
        text = log.read_text()
        assert "Exception inside application" not in text
        assert "ingest hello failed" not in text and "ingest batch of" not in text


def test_a_device_told_to_come_back_later_keeps_its_identity_and_retries(server):
    async def scenario(vm):
        fleet = await build_fleet(server.url, server.enroll_key, 1, seed=7, vm=vm)
        device = fleet.devices[0]
        token = device.identity.token
        stop = asyncio.Event()
        runner = asyncio.ensure_future(device.run(stop))
        try:
            await apoll(lambda: device.stats.busy >= 2, what="two deferred handshakes", timeout=30)
        finally:
            stop.set()
            await runner
            await fleet.http.aclose()
        return token, device

    with TaskVM(process_workers=0) as vm:
        token, device = asyncio.run(scenario(vm))
    assert device.identity.token == token  # not taken for a bad token: no re-enrollment
    assert not [e for e in device.stats.errors if e.startswith("handshake")]
    assert device.stats.connects == device.stats.busy  # every session was a deferral
