"""The whole loop against real daphne processes and real device clients:
upload a version through the REST API, release it, every device pulls, verifies, runs and
reports; an offline device catches up on connect; a tampered file is refused."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.live import apoll, wait_for_counts
from walle_device.fleet import build_fleet
from walle_device.vm import TaskVM

pytestmark = pytest.mark.e2e

TASK_V1 = (
    b"def run(ctx):\n    ctx.upload({'model': ctx.device['model'], 'v': 1})\n    return 'ok'\n"
)
TASK_V2 = b"def run(ctx):\n    data = ctx.read('data.bin')\n    return len(data)\n"
FLEET = 20


def upload_version(api, task_id: int, files: dict[str, bytes]) -> dict:
    response = api.post(
        f"/api/v1/tasks/{task_id}/versions/",
        files=[("files", (name, data)) for name, data in files.items()],
        data={"entry_point": "main.py"},
    )
    assert response.status_code == 201, response.text
    return response.json()


def release(api, version_id: int, **body) -> dict:
    created = api.post("/api/v1/releases/", json={"version": version_id, **body})
    assert created.status_code == 201, created.text
    started = api.post(f"/api/v1/releases/{created.json()['id']}/start/")
    assert started.status_code == 200, started.text
    return started.json()


def test_a_version_goes_from_upload_to_every_device_and_back(server, tmp_path: Path):
    api = server.api()
    created = api.post("/api/v1/tasks/", json={"app": server.app, "name": "item-features"})
    assert created.status_code == 201, created.text
    task = created.json()
    v1 = upload_version(api, task["id"], {"main.py": TASK_V1})

    async def scenario():
        # The devices run their tasks in the thread-level VM, as real devices do.
        fleet = await build_fleet(server.url, server.enroll_key, FLEET + 1, seed=7, vm=vm)
        late = fleet.devices.pop()  # offline during the release
        for i, device in enumerate(fleet.devices):  # spread over every server process
            device.identity.server = server.urls[i % len(server.urls)]
        stop = asyncio.Event()
        runners = [asyncio.ensure_future(d.run(stop)) for d in fleet.devices]
        # Synced: every hello answered, so every socket is registered for notices.
        await asyncio.wait_for(asyncio.gather(*(d.synced.wait() for d in fleet.devices)), 60)

        r1 = await asyncio.to_thread(release, api, v1["id"])
        # The offline device has a deployment too, pending until it connects.
        counts = await asyncio.to_thread(
            wait_for_counts, api, r1["id"], {"succeeded": FLEET, "pending": 1, "total": FLEET + 1}
        )
        assert counts["failed"] == 0
        assert all(d.stats.notices == 1 for d in fleet.devices), [
            d.stats.notices for d in fleet.devices
        ]
        assert all(d.cache.active("item-features").version == 1 for d in fleet.devices)
        assert all(d.stats.runs == 1 for d in fleet.devices)

        # The late device was offline during the push: it catches up through hello/desired.
        late_runner = asyncio.ensure_future(late.run(stop))
        await asyncio.to_thread(
            wait_for_counts, api, r1["id"], {"succeeded": FLEET + 1, "total": FLEET + 1}
        )
        assert late.stats.notices == 0 and late.cache.active("item-features").version == 1

        # Results flowed back through the socket, once per device run.
        results = await apoll(
            lambda: asyncio.to_thread(
                lambda: api.get("/api/v1/results/?task=item-features").json()
            ),
            until=lambda body: body["count"] >= FLEET + 1,
            what=f"{FLEET + 1} results of item-features",
            timeout=30,
        )
        assert results["count"] == FLEET + 1

        # A file tampered with in the content store is refused by the device that pulls it.
        # Larger than WALLE_INLINE_MAX_BYTES, so it is downloaded, not inlined in the manifest.
        weights = b"model weights " * 2000
        v2 = await asyncio.to_thread(
            upload_version, api, task["id"], {"main.py": TASK_V2, "data.bin": weights}
        )
        data_sha = next(f["sha256"] for f in v2["files"] if f["path"] == "data.bin")
        blob = server.var_dir / "content" / data_sha[:2] / data_sha[2:]
        blob.write_bytes(b"evil weights!")
        victim = fleet.devices[0]
        r2 = await asyncio.to_thread(
            release, api, v2["id"], target={"device_ids": [victim.identity.device_id]}
        )
        await asyncio.to_thread(wait_for_counts, api, r2["id"], {"failed": 1, "total": 1})
        dep = (
            await asyncio.to_thread(
                lambda: api.get(f"/api/v1/releases/{r2['id']}/deployments/").json()
            )
        )["results"][0]
        assert dep["error_code"] == "hash_mismatch"
        assert victim.cache.active("item-features").version == 1  # still runs the good version

        stop.set()
        await asyncio.gather(*runners, late_runner)
        assert all(d.pending == 0 for d in [*fleet.devices, late])  # every report acked
        await fleet.http.aclose()

    with TaskVM(process_workers=0) as vm:
        asyncio.run(scenario())

    # Reports are idempotent: the history has exactly one row per state per deployment.
    for dep in api.get("/api/v1/deployments/?limit=500").json()["results"]:
        history = api.get(f"/api/v1/deployments/{dep['id']}/history/").json()
        states = [h["state"] for h in history]
        assert len(states) == len(set(states)), states
