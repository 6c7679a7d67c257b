"""Demo data for `make run`: an app, an admin, a task with two versions and a running release."""

from __future__ import annotations

import io
import json

from django.core.management import call_command
from django.core.management.base import BaseCommand

from accounts.models import App
from releases.choices import ReleaseState
from releases.models import Release
from releases.services import create_release, start_release
from tasks.models import Task
from tasks.services import create_task, create_version

DEMO_V1 = '''"""Counts how often each page was seen in the event window and uploads the top pages."""


def run(ctx):
    counts = {}
    for event in ctx.window or []:  # no window when the run is not trigger-fired
        counts[event.get("page", "?")] = counts.get(event.get("page", "?"), 0) + 1
    ctx.upload({"model": ctx.device.get("model"), "top_pages": sorted(counts, key=counts.get)[-3:]})
    return len(counts)
'''
DEMO_V2 = DEMO_V1.replace("[-3:]", "[-5:]").replace("the top pages", "the top five pages")

ITEM_VIEWS = '''"""Items viewed per item-page visit: fired by the trigger at the end of each visit."""


def run(ctx):
    if not ctx.window:
        return 0  # the run at install time has no visit to look at
    aggregates = ctx.inputs.get("aggregates", {})
    ctx.upload({"page": ctx.window[0]["page"], "items_viewed": aggregates.get("items", 0), "clicks": aggregates.get("clicks", 0)})
    return aggregates.get("items", 0)
'''


# page-stats runs at the end of every page visit, so both versions keep reporting run stats
# while v2 rolls out: the dashboard's new-vs-control has a control group to compare with.
PAGE_STATS_TRIGGER = {
    "steps": [{"kind": "page_enter"}, {"kind": "page_exit"}],
    "key": "visit",
    "window": {"type": "session"},
}


def item_views_trigger() -> dict:
    from walle_device.stream.workload import page_names

    item_pages = [p for p in page_names() if p.startswith("item_")][:40]
    return {
        "steps": [{"kind": "page_enter", "page": item_pages}, {"kind": "page_exit"}],
        "key": "visit",
        "window": {"type": "session"},
        "aggregates": [
            {"name": "items", "op": "distinct", "arg": "item"},
            {"name": "clicks", "op": "count", "arg": "price"},
        ],
    }


class Command(BaseCommand):
    help = (
        "Create demo data (idempotent) and print the login, API token and enrollment key as JSON."
    )

    def handle(self, *args, **opts):
        out = io.StringIO()
        call_command("bootstrap", stdout=out)
        boot = json.loads(out.getvalue())
        app = App.objects.get(slug=boot["app"])
        task = Task.objects.filter(app=app, name="page-stats").first()
        if task is None:
            task = create_task(
                app,
                name="page-stats",
                scene="home",
                description="Top pages per session, computed on the device.",
            )
            v1 = create_version(
                task,
                files={"main.py": DEMO_V1.encode()},
                entry_point="main.py",
                config={"params": {"top": 3}, "trigger": PAGE_STATS_TRIGGER},
                notes="first version",
            )
            create_version(
                task,
                files={"main.py": DEMO_V2.encode()},
                entry_point="main.py",
                config={"params": {"top": 5}, "trigger": PAGE_STATS_TRIGGER},
                notes="top five",
            )
            start_release(create_release(v1, name="page-stats v1 to everyone"))
            views = create_task(
                app,
                name="item-views",
                scene="item",
                description="Items viewed per item-page visit, uploaded through the tunnel.",
            )
            iv = create_version(
                views,
                files={"main.py": ITEM_VIEWS.encode()},
                entry_point="main.py",
                config={"trigger": item_views_trigger()},
                notes="first version",
            )
            start_release(create_release(iv, name="item-views to everyone"))
        boot["task"] = task.pk
        boot["latest_version"] = task.versions.order_by("-number").first().pk
        boot["latest_released"] = (
            Release.objects.filter(task=task, version_id=boot["latest_version"])
            .exclude(state=ReleaseState.DRAFT)
            .exists()
        )
        self.stdout.write(json.dumps(boot))
