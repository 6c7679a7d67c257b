"""`python -m walle_device run` as a real process: it enrolls once, keeps its identity and
bundles in its state directory, survives kill -9, and catches up after a restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.live import ROOT, wait_for_counts
from tests.test_e2e import release, upload_version

pytestmark = [pytest.mark.e2e, pytest.mark.live(backends=["embedded"])]


def start_device(server, state_dir, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "walle_device",
            "run",
            "--server",
            server.url,
            "--state-dir",
            str(state_dir),
            *extra,
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_a_real_device_process_enrolls_once_and_catches_up_after_kill_9(server, tmp_path):
    api = server.api()
    task = api.post("/api/v1/tasks/", json={"app": server.app, "name": "cli"}).json()
    v1 = upload_version(api, task["id"], {"main.py": b"def run(ctx):\n    return 1\n"})
    state = tmp_path / "device"
    device = start_device(server, state, "--enroll-key", server.enroll_key, "--model", "Pixel 8")
    try:
        r1 = release(api, v1["id"])
        wait_for_counts(api, r1["id"], {"succeeded": 1, "total": 1})
    finally:
        device.send_signal(signal.SIGKILL)
        device.wait()
    identity = json.loads((state / "identity.json").read_text())
    assert json.loads((state / "bundles" / "active" / "cli.json").read_text())["version"] == 1

    # While it is down, v2 is released; on restart (no enrollment key now) it catches up.
    v2 = upload_version(api, task["id"], {"main.py": b"def run(ctx):\n    return 2\n"})
    r2 = release(api, v2["id"])
    device = start_device(server, state)
    try:
        wait_for_counts(api, r2["id"], {"succeeded": 1, "total": 1})
    finally:
        device.send_signal(signal.SIGTERM)
        out, _ = device.communicate(timeout=30)
    assert device.returncode == 0, out
    assert "enrolled as" not in out  # reused its identity
    devices = api.get(f"/api/v1/devices/?app={server.app}").json()
    assert devices["count"] == 1 and devices["results"][0]["uid"] == identity["device_id"]
    assert json.loads((state / "bundles" / "active" / "cli.json").read_text())["version"] == 2


def test_a_device_without_identity_or_key_says_what_to_do(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "walle_device",
            "run",
            "--server",
            "http://127.0.0.1:9",
            "--state-dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "--enroll-key" in out.stderr
