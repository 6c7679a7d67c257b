"""Faults in the middle of a release, on real servers with 500 simulated devices.

A paced release (the rollout worker rings devices at a rate) with a low success gate goes
out; once a quarter of the fleet succeeded, 20% of the devices lose their connection at once
and a daphne process is killed with SIGKILL and started again (the second of the scale-out
pair; the only one of the embedded server). Then every device must converge, every report a
device sent must be counted exactly once in the server's history, nothing may be left
non-final, and the release may complete only after all of that (a paced release used to
complete at its gate with connected devices still pending and never rung). On PostgreSQL,
the server's connections stay within the per-process pool bound the whole time.
"""

from __future__ import annotations

import asyncio
import random
import threading

import pytest

from tests.live import PG_URL, apoll
from tests.test_e2e import upload_version
from walle_device.fleet import build_fleet
from walle_device.vm import TaskVM

DEVICES = 500
POOL = 4  # WALLE_DB_POOL_SIZE of every server process in this test
TASK = b"def run(ctx):\n    return len(ctx.read('weights.bin'))\n"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.live(worker=True, extra_env={"WALLE_DB_POOL_SIZE": str(POOL)}),
]


class ConnectionWatch:
    """Samples how many connections the server's PostgreSQL database has, from the side."""

    def __init__(self, dbname: str) -> None:
        self.dbname = dbname
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psycopg

        with psycopg.connect(PG_URL + "postgres", autocommit=True) as conn:
            while not self._stop.wait(0.1):
                (n,) = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (self.dbname,)
                ).fetchone()
                self.most = max(self.most, n)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(timeout=10)
        return self.most


def release_body(api, release_id: int) -> dict:
    return api.get(f"/api/v1/releases/{release_id}/").json()


def test_a_paced_release_survives_a_killed_server_and_dropped_connections(server):
    api = server.api()
    watch = ConnectionWatch(server.dbname) if server.dbname else None
    task = api.post("/api/v1/tasks/", json={"app": server.app, "name": "faults"}).json()
    version = upload_version(api, task["id"], {"main.py": TASK, "weights.bin": b"w" * 30_000})
    sent: dict[str, set[tuple[int, str]]] = {}
    victim = len(server.urls) - 1  # the second of the pair, or the only embedded server

    async def scenario():
        fleet = await build_fleet(server.url, server.enroll_key, DEVICES, seed=23, vm=vm)
        for i, device in enumerate(fleet.devices):
            device.identity.server = server.urls[i % len(server.urls)]
            log = sent.setdefault(device.identity.device_id, set())
            device.listeners.append(
                lambda event, data, log=log: (
                    log.add((data["deployment"], data["state"])) if event == "report" else None
                )
            )
        stop = asyncio.Event()
        runners = [asyncio.ensure_future(d.run(stop)) for d in fleet.devices]
        await asyncio.wait_for(asyncio.gather(*(d.synced.wait() for d in fleet.devices)), 180)

        created = await asyncio.to_thread(
            api.post,
            "/api/v1/releases/",
            json={
                "version": version["id"],
                # The gate is met at half the fleet: a release that completed at its gate
                # would leave the devices it had not rung yet behind.
                "stages": [{"basis_points": 10_000, "success_gate": 0.5}],
                "delivery": {"notify_rate": 40},
            },
        )
        release_id = created.json()["id"]
        started = await asyncio.to_thread(api.post, f"/api/v1/releases/{release_id}/start/")
        assert started.status_code == 200, started.text

        await apoll(
            lambda: asyncio.to_thread(release_body, api, release_id),
            until=lambda body: body["counts"]["succeeded"] >= DEVICES // 4,
            what="a quarter of the fleet to succeed",
            timeout=240,
            interval=0.3,
        )
        rng = random.Random(5)
        dropped = [d for d in fleet.devices if d._ws is not None and rng.random() < 0.2]
        for device in dropped:
            device._ws.transport.abort()
        await asyncio.to_thread(server.kill, victim)
        await asyncio.to_thread(server.restart, victim)

        body = await apoll(
            lambda: asyncio.to_thread(release_body, api, release_id),
            until=lambda body: body["state"] == "completed",
            what="the release to complete after the faults",
            timeout=240,
            interval=0.5,
        )
        # Completed means finished: every device of the release succeeded, none pending.
        assert body["counts"]["succeeded"] == DEVICES, body["counts"]
        assert len(dropped) >= DEVICES // 10

        # Every report acked (the client keeps a report until its ack says it is stored).
        await apoll(
            lambda: sum(d.pending for d in fleet.devices) == 0,
            what="every device's reports to be acked",
            timeout=60,
            interval=0.3,
        )
        stop.set()
        await asyncio.gather(*runners)
        assert all(d.pending == 0 for d in fleet.devices)
        assert all(d.cache.active("faults").version == 1 for d in fleet.devices)
        await fleet.http.aclose()
        return release_id

    with TaskVM(process_workers=0) as vm:
        release_id = asyncio.run(scenario())

    # Exactly once: the server's history of device reports is what the devices sent.
    rows = server.query(
        "SELECT dv.uid, d.id, e.state FROM releases_deploymentevent e "
        "JOIN releases_deployment d ON d.id = e.deployment_id "
        "JOIN devices_device dv ON dv.id = d.device_id "
        "WHERE d.release_id = %s AND e.source = 'device'",
        (release_id,),
    )
    device_side = {(uid, dep, state) for uid, reports in sent.items() for dep, state in reports}
    assert len(rows) == len(set(rows)) == len(device_side)
    assert set(rows) == device_side
    assert {state for _, _, state in rows} == {"downloading", "installed", "succeeded"}
    left = server.query(
        "SELECT count(*) FROM releases_deployment WHERE release_id = %s AND state <> 'succeeded'",
        (release_id,),
    )
    assert left == [(0,)]
    if watch is not None:
        # Two daphne processes and the rollout worker, each with a pool of POOL at most.
        assert watch.stop() <= 3 * POOL
