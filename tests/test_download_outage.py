"""A device whose download finds the server down keeps trying, with backoff, until the server
is back, instead of reporting `download_failed` after a few quick tries (seen in the fault
tests as one or two devices failing while a killed server restarted).

Real server, real device client: the server is killed with SIGKILL the moment the device
reports `downloading` (before its first download request), and started again a few seconds
later. The release's own retry budget is small and fast (3 tries, 0.05 s base), far shorter
than the restart, so only waiting out the outage gets the device there.
"""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from tests.live import apoll, wait_for_counts
from tests.test_e2e import upload_version
from walle_device.fleet import build_fleet
from walle_device.vm import TaskVM

pytestmark = [pytest.mark.e2e, pytest.mark.live(backends=["embedded"])]

TASK = b"def run(ctx):\n    return len(ctx.read('weights.bin'))\n"
OUTAGE_S = 4.0


def test_a_download_that_finds_the_server_down_waits_for_it_to_come_back(server):
    api = server.api()
    task = api.post("/api/v1/tasks/", json={"app": server.app, "name": "outage"}).json()
    # Large enough not to be inlined in the manifest: the blob is a second request.
    version = upload_version(api, task["id"], {"main.py": TASK, "weights.bin": b"w" * 300_000})
    created = api.post(
        "/api/v1/releases/",
        json={
            "version": version["id"],
            "delivery": {"max_retries": 3, "retry_backoff_s": 0.05},
        },
    )
    assert created.status_code == 201, created.text
    release_id = created.json()["id"]
    reports: list[str] = []
    restarted = threading.Event()

    def bring_back() -> None:
        time.sleep(OUTAGE_S)
        server.restart(0)
        restarted.set()

    def on_event(event: str, data: dict) -> None:
        if event != "report":
            return
        reports.append(data["state"])
        if data["state"] == "downloading" and not restarted.is_set() and len(reports) == 1:
            # The download has not started yet: it will find nothing listening.
            server.kill(0)
            threading.Thread(target=bring_back, daemon=True).start()

    async def scenario() -> None:
        fleet = await build_fleet(server.url, server.enroll_key, 1, seed=3, vm=vm)
        device = fleet.devices[0]
        device.listeners.append(on_event)
        stop = asyncio.Event()
        runner = asyncio.ensure_future(device.run(stop))
        await asyncio.wait_for(device.synced.wait(), 60)
        try:
            await asyncio.to_thread(api.post, f"/api/v1/releases/{release_id}/start/")
        except httpx.HTTPError:
            pass  # the server may die before it answers; the start was committed first
        await apoll(
            lambda: "succeeded" in reports and not device.pending,
            what="the device to report succeeded and have its reports acked",
            timeout=120,
        )
        stop.set()
        await runner
        await fleet.http.aclose()
        assert reports == ["downloading", "installed", "succeeded"], device.stats.errors
        assert device.stats.failed == 0
        assert device.cache.active("outage").version == version["number"]

    with TaskVM(process_workers=0) as vm:
        asyncio.run(scenario())
    assert restarted.is_set()
    # The server counted it: the download waited out the outage.
    wait_for_counts(server.api(), release_id, {"succeeded": 1, "failed": 0})
