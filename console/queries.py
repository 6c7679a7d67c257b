"""Read-only queries behind console pages: fleet filters, target matching, release summaries.

Lists are paged by keyset (`id > after`) on indexed columns, so a page of a 100k-device fleet
costs the same as the first one and no page runs a COUNT(*).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.core.cache import cache
from django.db.models import Count, Exists, OuterRef, Q, QuerySet, TextField
from django.db.models.fields.json import KeyTextTransform, KeyTransform
from django.db.models.functions import Cast

from accounts.models import App
from devices import targeting
from devices.models import Device
from releases.choices import DeploymentState, RunningState
from releases.models import Deployment, RunningVersion

PAGE_SIZE = 50
FLEET_FILTERS = (
    "q",
    "model",
    "os",
    "region",
    "app_version",
    "tag",
    "online",
    "task",
    "version",
    "rolled_back",
)


@dataclass
class Page:
    """One keyset page: the rows and the cursors to the neighbouring pages."""

    rows: list
    after: int | None  # cursor for the next page, None on the last one
    before: int | None  # cursor for the previous page, None on the first one


def keyset_page(
    qs: QuerySet, after: str | None, before: str | None, size: int = PAGE_SIZE, desc=False
) -> Page:
    """Page `qs` by primary key. `desc` lists newest first (audit log, releases)."""
    asc_key, desc_key = ("-id", "id") if desc else ("id", "-id")
    nxt, prv = ("lt", "gt") if desc else ("gt", "lt")
    # A cursor is an id; anything else (or too large for the column) is ignored.
    before = before if before and before.isdigit() and len(before) <= 18 else None
    after = after if after and after.isdigit() and len(after) <= 18 else None
    if before:
        rows = list(qs.filter(**{f"id__{prv}": int(before)}).order_by(desc_key)[: size + 1])
        has_more_back = len(rows) > size
        rows = rows[:size][::-1]
        return Page(
            rows=rows,
            after=rows[-1].id if rows else None,
            before=rows[0].id if rows and has_more_back else None,
        )
    if after:
        qs_page = qs.filter(**{f"id__{nxt}": int(after)})
    else:
        qs_page = qs
    rows = list(qs_page.order_by(asc_key)[: size + 1])
    has_more = len(rows) > size
    rows = rows[:size]
    return Page(
        rows=rows,
        after=rows[-1].id if rows and has_more else None,
        before=rows[0].id if rows and after else None,
    )


def filter_fleet(app: App, params) -> QuerySet:
    """Devices of `app` narrowed by the fleet page's filters (each on a column, not in Python)."""
    qs = Device.objects.filter(app=app)
    if q := params.get("q", "").strip():
        qs = qs.filter(uid__startswith=q)
    if model := params.get("model", "").strip():
        qs = (
            qs.filter(model__startswith=model[:-1])
            if model.endswith("*")
            else qs.filter(model=model)
        )
    for name in ("os", "region", "app_version"):
        if value := params.get(name, "").strip():
            qs = qs.filter(**{name: value})
    if tag := params.get("tag", "").strip():
        # JSON list containment is not portable to SQLite; the quoted tag inside the text is.
        qs = qs.annotate(tags_text=Cast("tags", TextField())).filter(tags_text__contains=f'"{tag}"')
    online = params.get("online", "")
    if online in ("yes", "no"):
        qs = qs.filter(online=online == "yes")
    if task := params.get("task", "").strip():
        # What the device runs is what its reports say; a device that never reported on a
        # task (a pinned one, one from before reports were kept) falls back to its hello.
        running = RunningVersion.objects.filter(device=OuterRef("pk"), task__name=task)
        version = params.get("version", "").strip()
        hello = KeyTransform(task, "current")
        if version.isdigit() and len(version) <= 9:  # larger is no version number (or column)
            qs = qs.annotate(hello_version=KeyTextTransform("version", hello)).filter(
                Exists(running.filter(version__number=int(version)))
                | (~Exists(running) & Q(hello_version=version))
            )
        else:
            qs = qs.annotate(has_task=hello).filter(Exists(running) | Q(has_task__isnull=False))
        if params.get("rolled_back", "") == "yes":
            qs = qs.filter(Exists(running.filter(state=RunningState.ROLLED_BACK)))
    return qs


def fleet_choices(app: App) -> dict[str, list[str]]:
    """Distinct attribute values for the filter drop-downs (small sets: models, OS, regions).

    A DISTINCT over a 100k-device app takes ~0.25 s on SQLite, and the values hardly change,
    so they are cached for a minute per app.
    """
    key = f"console:fleet-choices:{app.pk}"
    choices = cache.get(key)
    if choices is None:
        base = Device.objects.filter(app=app)
        choices = {
            name: list(
                base.exclude(**{name: ""})
                .order_by(name)
                .values_list(name, flat=True)
                .distinct()[:200]
            )
            for name in ("model", "os", "region", "app_version")
        }
        cache.set(key, choices, 60)
    return choices


def match_summary(app: App, target: dict, sample: int = 5) -> dict:
    errors = targeting.validate_target(target)
    if errors:
        return {"errors": errors}
    count, uids = 0, []
    for device in targeting.reached_devices(app.pk, target):
        count += 1
        if len(uids) < sample:
            uids.append(device.uid)
    return {"count": count, "sample": uids}


def counts_for_releases(release_ids: list[int]) -> dict[int, dict[str, int]]:
    """Deployment counts by state for a page of releases, in one grouped query."""
    out: dict[int, dict[str, int]] = {
        rid: {s: 0 for s in DeploymentState.values} | {"total": 0} for rid in release_ids
    }
    rows = (
        Deployment.objects.filter(release_id__in=release_ids)
        .values("release_id", "state")
        .annotate(n=Count("id"))
        .order_by()
    )
    for row in rows:
        out[row["release_id"]][row["state"]] = row["n"]
        out[row["release_id"]]["total"] += row["n"]
    return out


def running_versions(device_ids: list[int]) -> dict[int, list[dict]]:
    """What each of these devices runs per task, from its reports (one query for a page)."""
    out: dict[int, list[dict]] = {i: [] for i in device_ids}
    rows = (
        RunningVersion.objects.filter(device_id__in=device_ids)
        .select_related("task", "version", "previous_version", "rollback_to")
        .order_by("task__name")
    )
    for r in rows:
        out[r.device_id].append(
            {
                "task": r.task.name,
                "task_id": r.task_id,
                "version": r.version.number,
                "state": r.state,
                "previous": r.previous_version.number if r.previous_version else None,
                "rollback_to": r.rollback_to.number if r.rollback_to else None,
                "release": r.release_id,
                "since": r.since,
            }
        )
    return out


def versions_of(device: Device, running: list[dict]) -> list[dict]:
    """Running versions from reports, plus tasks the device only named in its hello."""
    known = {r["task"] for r in running}
    hello_only = [
        {"task": name, "version": cur.get("version"), "state": "", "hello": True}
        for name, cur in sorted((device.current or {}).items())
        if name not in known and isinstance(cur, dict)
    ]
    return running + hello_only
