"""The embedded configuration runs the rollout loop inside the server process: a release
started from a shell (a process with no sockets) reaches every connected device and goes
through its stages with no `rolloutd` process and no HTTP hop between processes."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.live import poll, wait_for_counts
from tests.test_e2e import upload_version
from walle_device.fleet import build_fleet

pytestmark = [pytest.mark.e2e, pytest.mark.live(backends=["embedded"], worker=True)]

DEVICES = 12
TASK = b"def run(ctx):\n    return 'ok'\n"


def test_the_server_rolls_out_a_release_started_from_a_shell(server):
    assert len(server.procs) == 1  # daphne alone: no rolloutd beside it
    assert httpx.get(server.url + "/internal/relay").status_code == 404
    api = server.api()
    task = api.post("/api/v1/tasks/", json={"app": server.app, "name": "ranker"}).json()
    version = upload_version(api, task["id"], {"main.py": TASK})
    stages = [{"basis_points": bp, "soak_s": 0, "success_gate": 1.0} for bp in (2500, 10000)]
    release = api.post(
        "/api/v1/releases/", json={"version": version["id"], "stages": stages}
    ).json()

    async def scenario():
        fleet = await build_fleet(server.url, server.enroll_key, DEVICES, seed=5)
        stop = asyncio.Event()
        runners = [asyncio.ensure_future(d.run(stop)) for d in fleet.devices]

        def all_online():
            body = api.get(f"/api/v1/devices/?app={server.app}&online=true&limit=100").json()
            return body["count"] == DEVICES

        # Online in the database means the server took the socket (it registers it first).
        await asyncio.to_thread(poll, all_online, what="all devices online", timeout=90)
        # Started from another process: its notices would reach no socket, so it rings
        # nobody; the server's loop rings the stage's devices.
        await asyncio.to_thread(
            server.manage,
            "shell",
            "-c",
            "from releases.models import Release; "
            "from releases.services import start_release; "
            f"start_release(Release.objects.get(pk={release['id']}))",
        )
        await asyncio.to_thread(
            wait_for_counts, api, release["id"], {"succeeded": DEVICES, "total": DEVICES}
        )
        done = await asyncio.to_thread(
            poll,
            lambda: (
                (b := api.get(f"/api/v1/releases/{release['id']}/").json())["state"] == "completed"
                and b
            ),
            what="the release to complete",
            timeout=90,
        )
        assert all(d.cache.active("ranker").version == 1 for d in fleet.devices)
        stop.set()
        await asyncio.gather(*runners)
        return done

    done = asyncio.run(scenario())
    assert done["current_stage"] == 1
    audit = api.get(f"/api/v1/apps/{server.app}/audit/?limit=200").json()["results"]
    assert any(
        e["action"] == "release.advance" and e["target_id"] == str(release["id"]) for e in audit
    )
    # The steps were taken in the server process: its log has the loop's lines.
    log = server.logs[0].read_text()
    assert f"release {release['id']}: advanced" in log
    assert f"release {release['id']}: completed" in log
    # SIGTERM stops the loop with the server: the process ends by itself, cleanly.
    daphne = server.procs[0]
    daphne.terminate()
    assert daphne.wait(timeout=60) == 0
    assert "Traceback" not in server.logs[0].read_text()
