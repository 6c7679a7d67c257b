"""The desired state: which task versions a device should run now.

The app's active releases (target, salt, stage threshold, delivery policy) and its pins are
the same rows for every device of the app, so each process caches them (`CACHE`) and drops
an app's entry when any process says its releases changed (`devices.push`), plus a short
TTL in case such a message is lost. Answering a batch of hellos then costs one query for
the devices' deployments, plus writes only for late joiners.

Rules, in order: a pin wins; otherwise the newest started release of the task that has the
device in its current stage wins (a newer release at 1% does not take the device from an
older release at 100% until its own stage reaches it). A paced release hands out its version
only once the notifier rang the device; a paused or aborted one only to devices it rang.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from devices.models import Device
from devices.targeting import Groups, bucket, load_groups, matches
from releases import policy
from releases.choices import ACTIVE_RELEASE_STATES, DeploymentState, ReleaseState
from releases.models import Deployment, Pin, Release
from tasks.storage import manifest_url
from walle_device.protocol import DELIVERY_CONTROLS, DesiredTask

HANDING_OUT = (ReleaseState.RUNNING, ReleaseState.COMPLETED)


@dataclass(frozen=True, slots=True)
class ActiveRelease:
    """What desired-state answers need of a release, read once per process and change."""

    id: int
    app_id: int
    task: str
    version: int
    digest: str
    state: str
    stage: int
    threshold: int  # devices with a bucket below this are in the current stage
    target: dict
    salt: str
    paced: bool  # the notifier rings devices (rate or in-flight cap), not the hello
    delivery: dict  # the delivery controls every desired entry of this release carries

    def entry(self, deployment: int | None) -> dict:
        return DesiredTask(
            task=self.task,
            version=self.version,
            digest=self.digest,
            manifest_url=manifest_url(self.digest),
            deployment=deployment,
            release=self.id,
            **self.delivery,
        ).to_wire()


@dataclass
class AppReleases:
    releases: list[ActiveRelease]  # newest started first
    pins: dict[int, dict[str, dict]]  # device id -> task -> desired entry
    groups: Groups | None  # loaded only when some target names groups
    loaded_at: float = field(default_factory=time.monotonic)


def _load(app_id: int) -> AppReleases:
    releases = []
    for r in (
        Release.objects.filter(
            app_id=app_id, state__in=(*ACTIVE_RELEASE_STATES, ReleaseState.ABORTED)
        )
        .select_related("task", "version")
        .order_by("-started_at", "-id")
    ):
        delivery = r.delivery or {}
        releases.append(
            ActiveRelease(
                id=r.pk,
                app_id=app_id,
                task=r.task.name,
                version=r.version.number,
                digest=r.version.digest,
                state=r.state,
                stage=r.current_stage,
                threshold=10_000 if r.state == ReleaseState.COMPLETED else r.stage_basis_points(),
                target=r.target or {},
                salt=r.salt,
                paced=policy.limited(delivery) and r.state == ReleaseState.RUNNING,
                delivery={
                    name: type(default)(delivery.get(name, default))
                    for name, default in DELIVERY_CONTROLS.items()
                },
            )
        )
    pins: dict[int, dict[str, dict]] = {}
    for pin in Pin.objects.filter(device__app_id=app_id).select_related("task", "version"):
        pins.setdefault(pin.device_id, {})[pin.task.name] = DesiredTask(
            task=pin.task.name,
            version=pin.version.number,
            digest=pin.version.digest,
            manifest_url=manifest_url(pin.version.digest),
        ).to_wire()
    uses_groups = any("groups" in r.target for r in releases)
    return AppReleases(
        releases=releases, pins=pins, groups=load_groups(app_id) if uses_groups else None
    )


class ReleaseCache:
    """Per-process cache of each app's active releases and pins."""

    def __init__(self) -> None:
        self._apps: dict[int, AppReleases] = {}
        self._generation: dict[int, int] = {}
        self._lock = threading.Lock()

    def get(self, app_id: int) -> AppReleases:
        with self._lock:
            entry = self._apps.get(app_id)
            generation = self._generation.get(app_id, 0)
        if (
            entry is not None
            and time.monotonic() - entry.loaded_at < settings.WALLE_RELEASE_CACHE_TTL
        ):
            return entry
        entry = _load(app_id)
        with self._lock:
            # An invalidation that arrived while we read may describe a change our read did
            # not see: keep the answer for this batch, but do not cache it.
            if self._generation.get(app_id, 0) == generation:
                self._apps[app_id] = entry
        return entry

    def invalidate(self, app_id: int) -> None:
        with self._lock:
            self._generation[app_id] = self._generation.get(app_id, 0) + 1
            self._apps.pop(app_id, None)

    def clear(self) -> None:
        with self._lock:
            for app_id in self._apps:
                self._generation[app_id] = self._generation.get(app_id, 0) + 1
            self._apps.clear()


CACHE = ReleaseCache()


def _resolve(
    device: Device, app: AppReleases, deps: dict[int, tuple[int, str]]
) -> tuple[dict[str, dict], list[tuple[ActiveRelease, int]], list[int]]:
    """Pure: the device's desired entries given its deployments {release: (id, state)}, the
    late-joiner admissions still needed [(release, bucket)] and the pending deployments to
    hand out now (ids)."""
    result = dict(app.pins.get(device.pk, {}))
    admit: list[tuple[ActiveRelease, int]] = []
    hand_out: list[int] = []
    attrs = device.attrs()
    group_ids: frozenset[int] | None = None
    for release in app.releases:
        if release.task in result:
            continue  # pinned, or a newer release of this task already decided
        dep = deps.get(release.id)
        if dep is None:
            if release.state not in HANDING_OUT:
                continue  # paused or aborted: no new devices
            if group_ids is None:
                group_ids = (
                    app.groups.ids_for(device.pk, device.uid, attrs) if app.groups else frozenset()
                )
            if not matches(release.target, device.uid, attrs, group_ids):
                continue
            b = bucket(release.salt, device.uid)
            if b >= release.threshold:
                continue
            admit.append((release, b))
            if release.paced:
                continue  # admitted pending; the notifier rings it within the pace
            result[release.task] = release.entry(None)  # the id is known after the insert
            continue
        dep_id, state = dep
        if state == DeploymentState.ROLLED_BACK:
            continue
        if state == DeploymentState.PENDING:
            if release.paced or release.state not in HANDING_OUT:
                continue
            hand_out.append(dep_id)
        result[release.task] = release.entry(dep_id)
    return result, admit, hand_out


def admit_devices(
    release_id: int, app_id: int, stage: int, rows: list[tuple[int, int, bool]], now: datetime
) -> int:
    """Create deployments of a release for devices [(device id, bucket, notified?)].

    The one admission verb: the rollout's stage admission and late joiners on hello both
    come here, so both keep the same bookkeeping. Rows that exist already (another process
    admitted the device first) are left alone."""
    from releases.events import deployments_changed

    if not rows:
        return 0
    # Straight from value rows to one executemany: building 10k model instances and letting
    # bulk_create prepare each field cost ~2 s of a 10k-device release start.
    meta = Deployment._meta
    columns = {
        name: meta.get_field(name).column
        for name in (
            "release", "device", "bucket", "stage", "state", "attempts", "error_code",
            "error_message", "created_at", "updated_at", "notified_at", "finished_at",
        )
    }  # fmt: skip
    stamp = connection.ops.adapt_datetimefield_value(now)
    sql = (
        f"INSERT INTO {connection.ops.quote_name(meta.db_table)} "
        f"({', '.join(connection.ops.quote_name(c) for c in columns.values())}) "
        f"VALUES ({', '.join(['%s'] * len(columns))}) ON CONFLICT DO NOTHING"
    )
    with connection.cursor() as cursor:
        cursor.executemany(
            sql,
            [
                (
                    release_id, device_id, b, stage,
                    DeploymentState.NOTIFIED.value if notified else DeploymentState.PENDING.value,
                    0, "", "", stamp, stamp, stamp if notified else None, None,
                )
                for device_id, b, notified in rows
            ],
        )  # fmt: skip
    deployments_changed(release_id, app_id)
    return len(rows)


def _deployments_of(devices: list[Device], release_ids: list[int]) -> dict[int, dict]:
    deps: dict[int, dict[int, tuple[int, str]]] = {d.pk: {} for d in devices}
    if release_ids:
        for dep_id, release_id, device_id, state in Deployment.objects.filter(
            device_id__in=list(deps), release_id__in=release_ids
        ).values_list("id", "release_id", "device_id", "state"):
            deps[device_id][release_id] = (dep_id, state)
    return deps


def desired_states(devices: list[Device]) -> dict[int, list[dict]]:
    """Desired entries of each device (by pk), admitting late joiners on the way.

    Runs inside the caller's transaction (the ingest batch): one query for the devices'
    deployments in the apps' active releases; inserts and one update only when some device
    joins late or comes back for a version it was not handed yet."""
    from releases.events import deployments_changed

    now = timezone.now()
    answers: dict[int, list[dict]] = {}
    by_app: dict[int, list[Device]] = {}
    for device in devices:
        by_app.setdefault(device.app_id, []).append(device)
    for app_id, members in by_app.items():
        app = CACHE.get(app_id)
        release_ids = [r.id for r in app.releases]
        deps = _deployments_of(members, release_ids)
        admissions: dict[int, tuple[ActiveRelease, list[tuple[int, int, bool]]]] = {}
        for device in members:
            _, admit, _ = _resolve(device, app, deps[device.pk])
            for release, b in admit:
                admissions.setdefault(release.id, (release, []))[1].append(
                    (device.pk, b, not release.paced)
                )
        if admissions:
            for release, rows in admissions.values():
                admit_devices(release.id, app_id, release.stage, rows, now)
            deps = _deployments_of(members, release_ids)
        hand_out: dict[int, list[int]] = {}
        for device in members:
            entries, _, flips = _resolve(device, app, deps[device.pk])
            answers[device.pk] = [entries[k] for k in sorted(entries)]
            for dep_id in flips:
                release_id = next(r for r, (d, _) in deps[device.pk].items() if d == dep_id)
                hand_out.setdefault(release_id, []).append(dep_id)
        for release_id, ids in hand_out.items():
            Deployment.objects.filter(pk__in=ids, state=DeploymentState.PENDING).update(
                state=DeploymentState.NOTIFIED, notified_at=now
            )
            deployments_changed(release_id, app_id)
    return answers


def desired_state(device: Device) -> list[dict]:
    """The task versions this device should run now (admitting it if it joins late)."""
    with transaction.atomic():
        return desired_states([device])[device.pk]


def ingest_hello(items: list) -> None:
    """Ingest handler: answer a batch of hellos with their desired state."""
    answers = desired_states([item.device for item in items])
    for item in items:
        item.result = answers[item.device.pk]
