"""Two rollout workers at once, as separate processes on the same database: every transition
happens once (row locks on PostgreSQL, IMMEDIATE transactions on SQLite)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.live import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.live(processes=1)]

# One `rolloutd --once` pass that starts when the test says go (a line on stdin).
WORKER = """
import os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "walle_web.settings")
import django
django.setup()
from django.core.management import call_command
print("ready", flush=True)
sys.stdin.readline()
call_command("rolloutd", once=True)
"""


def test_two_workers_at_once_advance_each_stage_exactly_once(server):
    api = server.api()
    task = api.post("/api/v1/tasks/", json={"app": server.app, "name": "t"}).json()
    version = api.post(
        f"/api/v1/tasks/{task['id']}/versions/",
        files=[("files", ("main.py", b"def run(ctx):\n    return 1\n"))],
        data={"entry_point": "main.py"},
    ).json()
    enroll = {"enrollment_key": server.enroll_key, "attrs": {"model": "Pixel 8"}}
    for _ in range(30):
        assert api.post("/api/v1/devices/enroll/", json=enroll).status_code == 201
    # Gates that always pass, no soak: every evaluation advances one stage.
    stages = [{"basis_points": bp, "success_gate": 0.0, "soak_s": 0} for bp in (100, 2000, 10000)]
    release = api.post(
        "/api/v1/releases/", json={"version": version["id"], "stages": stages}
    ).json()
    assert api.post(f"/api/v1/releases/{release['id']}/start/").status_code == 200

    # Both workers load Django, say "ready", then wait on stdin: the go line reaches them at
    # once, so their passes overlap on the same release.
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER],
            cwd=ROOT,
            env=server.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for w in workers:
        assert w.stdout.readline().strip() == "ready", w.stderr.read()
    for w in workers:
        w.stdin.write("go\n")
        w.stdin.flush()
    outputs = [w.communicate(timeout=120) for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs

    body = api.get(f"/api/v1/releases/{release['id']}/").json()
    audit = api.get(f"/api/v1/apps/{server.app}/audit/?limit=200").json()["results"]
    advances = sorted(
        e["detail"]["stage"]
        for e in audit
        if e["action"] == "release.advance" and e["target_id"] == str(release["id"])
    )
    # Serialized: one worker took stage 1 -> 2, the other 2 -> 3. Racing workers would both
    # have read stage 1 and written stage 2 twice.
    assert advances == [2, 3], (advances, outputs)
    assert body["current_stage"] == 2
    assert body["counts"]["total"] == 30  # every device admitted once (unique per release)
