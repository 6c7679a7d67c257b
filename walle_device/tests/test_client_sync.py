"""The client's `synced` event against a scripted server on loopback: set only once the server
answered this connection's hello and the desired state it named was applied, cleared when the
connection drops (server-side registration before the answer: devices/tests/test_consumer.py)."""

from __future__ import annotations

import asyncio
import random

import httpx
from websockets.asyncio.server import serve

from walle_device import protocol
from walle_device.bundles import BundleCache
from walle_device.client import DeviceClient
from walle_device.enrollment import Identity


class ScriptedServer:
    """Answers each hello only when the test says so, with the desired state the test sets."""

    def __init__(self) -> None:
        self.hellos: asyncio.Queue = asyncio.Queue()  # (socket, hello id) as they arrive
        self.reports: list[tuple[int, str]] = []

    async def handler(self, ws) -> None:
        async for frame in ws:
            msg = protocol.decode(frame)
            if msg["type"] == "hello":
                await self.hellos.put((ws, msg["id"]))
            elif msg["type"] == "report":
                self.reports.append((msg["deployment"], msg["state"]))
                await ws.send(protocol.encode(protocol.message("ack", ref=msg["id"])))

    @staticmethod
    def content(connection, request):
        if request.path.startswith("/content/"):
            return connection.respond(404, "no such content\n")
        return None

    @staticmethod
    async def answer(ws, hello_id: str, tasks: list[protocol.DesiredTask]) -> None:
        desired = protocol.message(
            "desired", tasks=[t.to_wire() for t in tasks], server_time=0.0, ref=hello_id
        )
        await ws.send(protocol.encode(desired))


def never_runs(*_args):
    raise AssertionError("nothing is installed in this test, so nothing may run")


def test_synced_waits_for_the_answer_and_the_applied_state_and_clears_on_a_drop():
    async def go():
        server = ScriptedServer()
        async with serve(server.handler, "127.0.0.1", 0, process_request=server.content) as srv:
            url = f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}"
            identity = Identity("dev-sync", "dev-sync.secret", "shop", "", url)
            async with httpx.AsyncClient(timeout=10) as http:
                device = DeviceClient(
                    identity,
                    {"model": "Pixel 8"},
                    BundleCache(None),
                    http,
                    rng=random.Random(3),
                    runner=never_runs,
                )
                stop = asyncio.Event()
                runner = asyncio.ensure_future(device.run(stop))

                ws, hello = await asyncio.wait_for(server.hellos.get(), 10)
                # Connected and said hello, but the server has not taken the socket yet.
                assert device.connected.is_set() and not device.synced.is_set()

                # A deployment whose download fails for good: synced comes after the failure
                # was reported, i.e. after the desired state was applied, not when it arrived.
                gone = protocol.DesiredTask(
                    "t", 1, "d" * 64, "/content/manifests/x.json", 41, max_retries=0
                )
                await server.answer(ws, hello, [gone])
                await asyncio.wait_for(device.synced.wait(), 10)
                assert (41, "failed") in device._reported
                assert device.stats.failed == 1

                # The server drops the connection: the next hello comes from a device that is
                # no longer synced, and it is synced again only once that hello is answered.
                await ws.close()
                ws, hello = await asyncio.wait_for(server.hellos.get(), 10)
                assert not device.synced.is_set()
                await server.answer(ws, hello, [])
                await asyncio.wait_for(device.synced.wait(), 10)
                assert device.stats.connects == 2

                stop.set()
                await asyncio.wait_for(runner, 10)
                assert not device.synced.is_set()
        return server.reports

    reports = asyncio.run(go())
    assert (41, "downloading") in reports and (41, "failed") in reports
