"""Kill -9 a real device runtime mid-flight and restart it: the cloud counts every task result
exactly once, and they are the results an uninterrupted device would have uploaded.

The device is `DeviceClient` as `python -m walle_device run` builds it (bundle cache, stream
processor, durable tunnel, the thread-level VM), with a released task whose trigger fires on
the app's events: the fire is recorded, the task runs in the VM, its result goes into the
tunnel and up the device's websocket. The process is frozen until fires are seen between
"accepted" and "completed" (in the VM or on their way to it), then killed in that state, so
the fire/complete path around the VM is cut mid-flight. This file is also the device:
`python -m tests.test_pipeline_kill_e2e STATE`.

The workload and the trigger are those of walle_device/tests/test_stream_kill.py, which kills
the stream and tunnel alone, against an in-test receiver.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.live import ROOT, apoll, poll, wait_for_counts
from tests.test_e2e import release
from walle_device.bundles import BundleCache
from walle_device.client import DeviceClient
from walle_device.enrollment import Identity
from walle_device.runner import VMRunner
from walle_device.stream import Stream, Window
from walle_device.tests.test_stream_kill import N_EVENTS, TRIGGERS, events
from walle_device.tunnel import Tunnel, result_key
from walle_device.vm import TaskVM

pytestmark = [pytest.mark.e2e, pytest.mark.live(backends=["embedded"])]

TASK = "item-visits"
TRIGGER = TRIGGERS["ipv"]  # a page visit: enter, then exit; the items seen in between
# Some work in the VM per fire, so a fire spends a few milliseconds there; then one result
# per fire that has a window, which the test can compute without the VM.
SOURCE = b"""def run(ctx):
    work = sum(i * i for i in range(20000))
    if ctx.window:
        ctx.upload({
            "n": len(ctx.window),
            "start": ctx.window[0]["seq"],
            "aggs": ctx.inputs["aggregates"],
            "work": work > 0,
        })
"""
ATTRS = {"model": "Pixel 8", "os": "android", "os_version": "14", "app_version": "10.0.1"}


def expected(device_id: str) -> dict[str, dict[str, Any]]:
    """What an uninterrupted device uploads for the whole workload: result key -> payload."""
    out: dict[str, dict[str, Any]] = {}

    def on_fire(task: str, seq: int, window: Window) -> None:
        data = json.loads(json.dumps(window.to_dict()))  # as the VM and the cloud see it
        if data["events"]:
            out[result_key(device_id, task, 1, seq)] = {
                "n": len(data["events"]),
                "start": data["events"][0]["seq"],
                "aggs": data["aggregates"],
                "work": True,
            }

    stream = Stream(on_fire)
    stream.register_trigger(TASK, TRIGGER)
    for e in events():
        stream.emit(e["kind"], e["page"], e["event"], e["args"], e["ts"])
        stream.process_pending()
    return out


def results_at_cloud(api: httpx.Client, app: str) -> dict[str, dict]:
    body = api.get(f"/api/v1/results/export/?app={app}&task={TASK}")
    assert body.status_code == 200, body.text[:300]
    rows = [json.loads(line) for line in body.text.splitlines()]
    keys = [row["key"] for row in rows]
    assert len(keys) == len(set(keys)), "a result was stored twice"
    return {row["key"]: row["payload"] for row in rows}


def results_counted(api: httpx.Client) -> int:
    return api.get(f"/api/v1/results/?task={TASK}&limit=1").json()["count"]


def in_flight(state: Path) -> dict[str, Any]:
    """The fire seqs the device accepted but has not completed, and the count of results it
    has not had acked, read from its tunnel's database without writing (the device may be
    frozen mid-write)."""
    uri = f"file:{state / 'tunnel' / 'outbox.sqlite3'}?mode=ro"
    with closing(sqlite3.connect(uri, uri=True, timeout=1)) as db:
        fires = [seq for (seq,) in db.execute("SELECT fire_seq FROM fires ORDER BY fire_seq")]
        (outbox,) = db.execute("SELECT count(*) FROM outbox").fetchone()
    return {"fires": fires, "results": outbox}


def start_device(state: Path, log: Path) -> subprocess.Popen:
    with log.open("w") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.test_pipeline_kill_e2e", str(state)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"},
            stdout=fh,
            stderr=subprocess.STDOUT,
        )


def test_a_device_killed_with_fires_in_the_vm_counts_each_result_once_at_the_cloud(
    server, tmp_path
):
    api = server.api()
    task = api.post("/api/v1/tasks/", json={"app": server.app, "name": TASK}).json()
    response = api.post(
        f"/api/v1/tasks/{task['id']}/versions/",
        files=[("files", ("main.py", SOURCE))],
        data={"entry_point": "main.py", "config": json.dumps({"trigger": TRIGGER})},
    )
    assert response.status_code == 201, response.text
    version = response.json()
    # The device is enrolled here and keeps its identity in its state directory, as the CLI's.
    enrolled = httpx.post(
        server.url + "/api/v1/devices/enroll/",
        json={"enrollment_key": server.enroll_key, "attrs": ATTRS},
    ).json()
    state = tmp_path / "device"
    identity = Identity(
        device_id=enrolled["device_id"],
        token=enrolled["token"],
        app=enrolled["app"],
        release_key=enrolled["release_key"],
        server=server.url,
    )
    identity.save(state / "identity.json")
    want = expected(identity.device_id)
    assert len(want) > 150  # enough fires that the kill lands among them

    first = start_device(state, tmp_path / "device-1.log")
    try:
        rollout = release(api, version["id"])
        wait_for_counts(api, rollout["id"], {"succeeded": 1})

        def frozen_mid_flight() -> dict[str, Any] | None:
            """Freeze the device once a quarter of the results arrived; keep it frozen if
            fires are between accepted and completed, else let it go on."""
            if first.poll() is not None:
                raise AssertionError((tmp_path / "device-1.log").read_text()[-3000:])
            if results_counted(api) < len(want) // 4:
                return None
            first.send_signal(signal.SIGSTOP)
            seen = in_flight(state)
            if seen["fires"]:
                return seen
            first.send_signal(signal.SIGCONT)
            return None

        seen = poll(
            frozen_mid_flight,
            what="the device to hold fires in flight after a quarter of the results",
            timeout=120,
            interval=0.01,
        )
    finally:
        first.kill()  # kill -9, frozen or not
        first.wait(10)
    at_kill = results_at_cloud(api, server.app)
    assert len(at_kill) < len(want), "the device finished before it was killed"
    print(f"killed with {seen} in flight and {len(at_kill)}/{len(want)} results at the cloud")

    second = start_device(state, tmp_path / "device-2.log")
    try:
        second.wait(180)
    finally:
        second.kill()
    out = (tmp_path / "device-2.log").read_text()
    assert second.returncode == 0 and "DONE" in out, out[-3000:]
    resumed = json.loads(out.split("DONE", 1)[1])["resumed"]
    assert 0 < resumed < N_EVENTS  # the first run died mid-stream

    stored = results_at_cloud(api, server.app)
    assert set(stored) == set(want)  # 0 lost, 0 extra
    assert stored == want  # and the same windows
    assert results_counted(api) == len(want)  # counted once each


# --- the device --------------------------------------------------------------------------


async def _device(state: Path) -> None:
    """Run DeviceClient on `state` until the app's whole event stream is processed and every
    result and report is acked; the app resumes its events where the durable log ends."""
    identity = Identity.load(state / "identity.json")
    assert identity is not None
    stream = Stream(state_dir=state / "stream")
    resumed = stream.stats()["next_seq"]
    tunnel = Tunnel(state / "tunnel", identity.device_id, backoff_base_s=0.05, backoff_cap_s=1)
    async with httpx.AsyncClient(timeout=30) as http:
        with TaskVM(process_workers=0) as vm:
            client = DeviceClient(
                identity,
                ATTRS,
                BundleCache(state / "bundles"),
                http,
                state_dir=state,
                stream=stream,
                tunnel=tunnel,
                runner=VMRunner(vm, identity.device_id, dict(ATTRS, id=identity.device_id)),
            )
            ran = asyncio.Event()
            client.listeners.append(lambda event, data: ran.set() if event == "run" else None)
            stop = asyncio.Event()
            runner = asyncio.ensure_future(client.run(stop))
            if client.cache.active(TASK) is None:
                await ran.wait()  # installed and run once: its trigger is registered
            evs = events()
            for i in range(resumed, len(evs)):
                e = evs[i]
                while not stream.emit(e["kind"], e["page"], e["event"], e["args"], e["ts"]):
                    await asyncio.sleep(0.001)  # the stream's queue is full: the app waits
                if i % 5 == 0:
                    await asyncio.sleep(
                        0.01
                    )  # app pace (~6 s in all), so the kill lands mid-stream
            assert await asyncio.to_thread(stream.flush, 60)
            await apoll(
                lambda: not tunnel.pending_fires() and not tunnel.pending() and not client.pending,
                what="every fire completed and every result and report acked",
                timeout=120,
                interval=0.05,
            )
            stop.set()
            await runner
    print("DONE", json.dumps({"resumed": resumed, **tunnel.stats()}), flush=True)


if __name__ == "__main__":
    asyncio.run(_device(Path(sys.argv[1])))
