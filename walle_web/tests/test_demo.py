"""The demo that `make run` loads: its tasks must run in the VM, fired by a trigger or not."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command

from releases.models import Release
from tasks.models import TaskVersion
from tasks.storage import content_store
from walle_device.vm import TaskVM

pytestmark = pytest.mark.django_db

WINDOW = [
    {"kind": "page_enter", "page": "item_3", "event": "", "args": {}, "ts": 1},
    {"kind": "exposure", "page": "item_3", "event": "impression", "args": {"item": "i1"}, "ts": 2},
    {"kind": "page_exit", "page": "item_3", "event": "", "args": {}, "ts": 3},
]


def test_the_demo_loads_once_and_every_version_runs_in_the_vm():
    out = io.StringIO()
    call_command("demo", stdout=out)
    boot = json.loads(out.getvalue())
    call_command("demo", stdout=io.StringIO())  # idempotent: a second make run adds nothing
    assert TaskVersion.objects.count() == 3 and Release.objects.filter(state="running").count() == 2
    assert boot["enroll_key"].startswith("wek_") and boot["latest_released"] is False
    with TaskVM(process_workers=0) as vm:
        for version in TaskVersion.objects.all():
            files = {
                f["path"]: content_store().read(f["sha256"]) for f in version.manifest["files"]
            }
            task_id = f"{version.task.name}-{version.number}"
            vm.load(task_id, files[version.entry_point].decode(), {}, version.config)
            for window in (None, WINDOW):
                result = vm.run(
                    task_id,
                    {"aggregates": {"items": 1}},
                    window=window,
                    device={"model": "Pixel 8"},
                )
                assert result.ok, (task_id, result.error_type, result.message)
