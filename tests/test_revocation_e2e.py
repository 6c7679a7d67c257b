"""Revocation across server processes: two daphne processes on PostgreSQL + Redis; an admin
retires a device through one process while its socket is held by the other, and that socket
gets the `revoked` error frame and closes (the notice travels on the push channel)."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import websockets

from walle_device import protocol

pytestmark = [pytest.mark.e2e, pytest.mark.live(backends=["scaleout"], processes=2)]


def test_retiring_a_device_closes_its_socket_on_another_process(server):
    enrolled = httpx.post(
        server.urls[0] + "/api/v1/devices/enroll/",
        json={"enrollment_key": server.enroll_key, "attrs": {"model": "Pixel 8"}},
    ).json()
    token, uid = enrolled["token"], enrolled["device_id"]
    ws_url = server.urls[1].replace("http://", "ws://") + "/ws/device/"
    headers = {"Authorization": f"Bearer {token}"}

    async def go() -> float:
        async with websockets.connect(ws_url, additional_headers=headers) as ws:
            await ws.send(json.dumps(protocol.message("hello", attrs={}, current={}, id="h")))
            assert protocol.decode(await asyncio.wait_for(ws.recv(), 30))["type"] == "desired"
            started = time.monotonic()
            retired = await asyncio.to_thread(server.api().post, f"/api/v1/devices/{uid}/retire/")
            assert retired.status_code == 200, retired.text
            error = protocol.decode(await asyncio.wait_for(ws.recv(), 30))
            assert (error["type"], error["code"]) == ("error", "revoked")
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 30)
            assert closed.value.rcvd.code == 4403
            return time.monotonic() - started

    elapsed = asyncio.run(go())
    print(f"socket on the other process closed {elapsed:.3f} s after the retire call began")

    async def reconnect(url: str) -> None:
        with pytest.raises(websockets.InvalidStatus):
            async with websockets.connect(url, additional_headers=headers):
                pass

    for url in server.urls:
        asyncio.run(reconnect(url.replace("http://", "ws://") + "/ws/device/"))
    device = server.api().get(f"/api/v1/devices/{uid}/").json()
    assert device["retired_at"] and not device["online"]
