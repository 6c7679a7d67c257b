"""The data pipeline end to end: a released task's trigger fires on app events on the device,
the task runs over its window, and its results reach the cloud once each through the
durable tunnel and the device websocket."""

from __future__ import annotations

import asyncio
import json
import random

import httpx
import pytest

from tests.live import apoll, wait_for_counts
from tests.test_e2e import release
from walle_device.bundles import BundleCache
from walle_device.client import DeviceClient
from walle_device.enrollment import enroll
from walle_device.stream import Stream
from walle_device.tunnel import Tunnel

pytestmark = [pytest.mark.e2e, pytest.mark.live(backends=["embedded"])]

TASK = b"""def run(ctx):
    if ctx.window:
        ctx.upload({"page": ctx.window[0]["page"], "items": ctx.inputs["aggregates"]["items"]})
"""
TRIGGER = {
    "steps": [{"kind": "page_enter", "page": "item_7"}, {"kind": "page_exit"}],
    "key": "visit",
    "window": {"type": "session"},
    "aggregates": [{"name": "items", "op": "distinct", "arg": "item"}],
}


def test_a_trigger_fires_on_device_events_and_results_arrive_once(server, tmp_path):
    api = server.api()
    task = api.post("/api/v1/tasks/", json={"app": server.app, "name": "item-views"}).json()
    bad = api.post(
        f"/api/v1/tasks/{task['id']}/versions/",
        files=[("files", ("main.py", TASK))],
        data={"entry_point": "main.py", "config": '{"trigger": {"steps": [{"kind": "tap"}]}}'},
    )
    assert bad.status_code == 400 and "unknown kind 'tap'" in bad.text
    version = api.post(
        f"/api/v1/tasks/{task['id']}/versions/",
        files=[("files", ("main.py", TASK))],
        data={"entry_point": "main.py", "config": json.dumps({"trigger": TRIGGER})},
    ).json()

    async def scenario():
        async with httpx.AsyncClient(timeout=30) as http:
            identity = await enroll(http, server.url, server.enroll_key, {"model": "Pixel 8"})
            home = tmp_path / "device"
            device = DeviceClient(
                identity,
                {"model": "Pixel 8"},
                BundleCache(home / "bundles"),
                http,
                state_dir=home,
                rng=random.Random(1),
                stream=Stream(state_dir=home / "stream"),
                tunnel=Tunnel(home / "tunnel", identity.device_id),
            )
            stop = asyncio.Event()
            runner = asyncio.ensure_future(device.run(stop))
            await asyncio.wait_for(device.synced.wait(), 60)
            r = await asyncio.to_thread(release, api, version["id"])
            await asyncio.to_thread(wait_for_counts, api, r["id"], {"succeeded": 1})
            # Three visits of the item page with 2, 3 and 1 distinct items, one other visit.
            for items in (["a", "b"], ["a", "b", "c", "c"], ["z"]):
                device.stream.emit("page_enter", "item_7")
                for item in items:
                    device.stream.emit("exposure", "item_7", "impression", {"item": item})
                device.stream.emit("page_exit", "item_7")
            device.stream.emit("page_enter", "home")
            device.stream.emit("page_exit", "home")
            results = await apoll(
                lambda: asyncio.to_thread(
                    lambda: api.get("/api/v1/results/?task=item-views").json()
                ),
                until=lambda body: body["count"] >= 3 and device.tunnel.pending() == 0,
                what="3 results of item-views at the cloud and an empty tunnel",
                timeout=30,
            )
            stop.set()
            await runner
            return results

    results = asyncio.run(scenario())
    assert results["count"] == 3
    assert sorted(r["payload"]["items"] for r in results["results"]) == [1, 2, 3]
    assert {r["payload"]["page"] for r in results["results"]} == {"item_7"}
