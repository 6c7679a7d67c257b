"""A gray release on a real server with 200 simulated devices and the rollout worker:
1% -> 20% -> 100%; the new version fails on one device model; the error gate pauses the
release with that reason; a rollback brings every device back to the previous version,
from its cache; no report is lost or counted twice."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from tests.live import wait_for_counts, wait_for_release
from tests.test_e2e import upload_version
from walle_device.fleet import build_fleet

pytestmark = [pytest.mark.e2e, pytest.mark.live(worker=True)]

GOOD = b"def run(ctx):\n    return 'v1'\n"
BAD_ON_MOTO = b"def run(ctx):\n    if ctx.device['model'].startswith('Moto'):\n        raise RuntimeError('kernel not supported on this GPU')\n    return 'v2'\n"
DEVICES = 200


def test_error_gate_pauses_and_rollback_restores_the_fleet(server):
    api = server.api()
    task = api.post("/api/v1/tasks/", json={"app": server.app, "name": "ranker"}).json()
    v1 = upload_version(api, task["id"], {"main.py": GOOD})
    v2 = upload_version(api, task["id"], {"main.py": BAD_ON_MOTO})

    async def scenario():
        fleet = await build_fleet(server.url, server.enroll_key, DEVICES, seed=11)
        for i, device in enumerate(fleet.devices):
            device.identity.server = server.urls[i % len(server.urls)]
        downloads = Counter()
        for device in fleet.devices:
            device.listeners.append(
                lambda event, data, d=device: (
                    downloads.update([d.identity.device_id])
                    if event == "report" and data["state"] == "downloading"
                    else None
                )
            )
        stop = asyncio.Event()
        runners = [asyncio.ensure_future(d.run(stop)) for d in fleet.devices]
        await asyncio.wait_for(asyncio.gather(*(d.synced.wait() for d in fleet.devices)), 60)

        r1 = (
            await asyncio.to_thread(api.post, "/api/v1/releases/", json={"version": v1["id"]})
        ).json()
        await asyncio.to_thread(api.post, f"/api/v1/releases/{r1['id']}/start/")
        await asyncio.to_thread(
            wait_for_release, api, r1["id"], lambda b: b["state"] == "completed", "to complete"
        )
        assert all(d.cache.active("ranker").version == 1 for d in fleet.devices)

        stages = [
            {
                "basis_points": 100,
                "soak_s": 0,
                "success_gate": 0.5,
                "error_gate": 0.02,
                "min_finished": 3,
            },
            {
                "basis_points": 2000,
                "soak_s": 0,
                "success_gate": 0.5,
                "error_gate": 0.02,
                "min_finished": 3,
            },
            {
                "basis_points": 10000,
                "soak_s": 0,
                # Never complete while Moto devices fail: the error gate must have its say.
                "success_gate": 1.0,
                "error_gate": 0.02,
                "min_finished": 3,
            },
        ]
        r2 = (
            await asyncio.to_thread(
                api.post, "/api/v1/releases/", json={"version": v2["id"], "stages": stages}
            )
        ).json()
        await asyncio.to_thread(api.post, f"/api/v1/releases/{r2['id']}/start/")
        paused = await asyncio.to_thread(
            wait_for_release, api, r2["id"], lambda b: b["state"] == "paused", "to pause"
        )
        assert "error gate" in paused["reason"] and "Moto G84" in paused["reason"], paused["reason"]
        monitoring = (
            await asyncio.to_thread(api.get, f"/api/v1/releases/{r2['id']}/monitoring/")
        ).json()
        assert monitoring["failure_reasons"][0]["model"] == "Moto G84"
        assert monitoring["failure_reasons"][0]["error_code"] == "run_failed"
        assert 0 < monitoring["counts"]["total"] < DEVICES or paused["current_stage"] == 2

        downloads_before = sum(downloads.values())
        rolled = await asyncio.to_thread(
            api.post, f"/api/v1/releases/{r2['id']}/rollback/", json={"reason": "Moto G84 crashes"}
        )
        assert rolled.status_code == 201, rolled.text
        rollback = rolled.json()
        assert rollback["version_number"] == 1 and rollback["rollback_of"] == r2["id"]
        await asyncio.to_thread(
            wait_for_counts, api, rollback["id"], {"succeeded": DEVICES, "total": DEVICES}
        )
        assert all(d.cache.active("ranker").version == 1 for d in fleet.devices)
        assert sum(downloads.values()) == downloads_before  # back from the cache, not downloaded
        original = (await asyncio.to_thread(api.get, f"/api/v1/releases/{r2['id']}/")).json()
        assert original["state"] == "rolled_back" and original["reason"] == "Moto G84 crashes"

        stop.set()
        await asyncio.gather(*runners)
        assert all(d.pending == 0 for d in fleet.devices)  # every report acked: none lost
        await fleet.http.aclose()

    asyncio.run(scenario())

    # Not counted twice: one history row per state per deployment, and counts add up.
    for rid in (
        r["id"] for r in api.get("/api/v1/releases/?task=ranker&limit=10").json()["results"]
    ):
        body = api.get(f"/api/v1/releases/{rid}/").json()
        counts = body["counts"]
        assert counts["total"] == sum(v for k, v in counts.items() if k != "total")
        deployments = api.get(f"/api/v1/releases/{rid}/deployments/?limit=1000").json()
        assert deployments["count"] == counts["total"]
        assert len({d["device"] for d in deployments["results"]}) == counts["total"]
