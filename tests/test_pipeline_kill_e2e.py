"""Kill -9 a device process mid-stream and mid-upload, restart it: the real cloud ends with
exactly the results an uninterrupted device would have uploaded (0 lost, 0 duplicated).

The device here is the stream processor and the durable tunnel of walle_device, uploading
through the cloud's HTTP tunnel endpoint with its device token; the workload and triggers
are those of walle_device/tests/test_stream_kill.py. This file is also the device:
`python -m tests.test_pipeline_kill_e2e STATE URL TOKEN DEVICE_ID`.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.live import ROOT, live_server
from walle_device.tests.test_stream_kill import N_EVENTS, TRIGGERS, expected, run_device

pytestmark = pytest.mark.e2e


def results_at_cloud(api: httpx.Client, app: str) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for task in TRIGGERS:
        body = api.get(f"/api/v1/results/export/?app={app}&task={task}")
        for line in body.text.splitlines():
            row = json.loads(line)
            out[row["key"]] = row["payload"]
    return out


def test_a_device_killed_mid_upload_ends_with_exactly_the_expected_results_at_the_cloud(tmp_path):
    with live_server(tmp_path) as server:
        api = server.api()
        enrolled = api.post(
            "/api/v1/devices/enroll/",
            json={"enrollment_key": server.enroll_key, "attrs": {"model": "Pixel 8"}},
        ).json()
        want = expected(enrolled["device_id"])
        assert len(want) > 150
        state = tmp_path / "device"
        argv = [
            sys.executable,
            "-m",
            "tests.test_pipeline_kill_e2e",
            str(state),
            server.url,
            enrolled["token"],
            enrolled["device_id"],
        ]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        first = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 60
        while api.get("/api/v1/results/?limit=1").json()["count"] < len(want) // 4:  # well into it
            assert time.monotonic() < deadline and first.poll() is None, (
                first.stderr.read() if first.poll() is not None else "slow"
            )
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        assert len(results_at_cloud(api, server.app)) < len(want)  # it died mid-stream
        second = subprocess.run(
            argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
        )
        assert second.returncode == 0, second.stderr
        resumed = json.loads(second.stdout.split("DONE", 1)[1])["resumed"]
        assert 0 < resumed < N_EVENTS
        stored = results_at_cloud(api, server.app)
    assert set(stored) == set(want)  # 0 lost, 0 extra (keys are unique at the cloud)
    assert stored == want  # the same windows too


async def _device(state: Path, url: str, token: str, device_id: str) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:

        async def send(items: list[dict]) -> list[str]:
            response = await http.post("/api/v1/tunnel/", json={"items": items})
            response.raise_for_status()
            return response.json()["keys"]

        # A slower app pace (~6 s in all) than the in-test receiver's, so the kill lands
        # mid-stream even though the real server acks at once.
        await run_device(state, device_id, send, every=5, pause_s=0.01)


if __name__ == "__main__":
    asyncio.run(_device(Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]))
