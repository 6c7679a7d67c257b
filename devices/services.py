"""State changes of devices: enrollment, presence, hello, run stats and tunnel results."""

from __future__ import annotations

import hmac
import secrets

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import App
from accounts.services import audit, find_enrollment_key, hash_secret
from devices import push, targeting
from devices.choices import GroupKind
from devices.models import Device, DeviceGroup, Result, RunStat
from walle_device.protocol import ATTR_FIELDS

MAX_ATTR_LEN = 80


class EnrollmentError(ValueError):
    """Enrollment refused; the message says why."""


def clean_attrs(attrs: dict) -> dict:
    """Keep the known attributes, as short strings (tags as a short list of strings)."""
    cleaned: dict = {}
    for name in ATTR_FIELDS:
        if name not in attrs:
            continue
        value = attrs[name]
        if name == "tags":
            cleaned[name] = (
                [str(t)[:MAX_ATTR_LEN] for t in value if isinstance(t, str)][:32]
                if isinstance(value, list)
                else []
            )
        else:
            cleaned[name] = str(value)[:MAX_ATTR_LEN]
    return cleaned


def enroll_devices(requests: list[tuple[str, dict]]) -> list[tuple[Device, str] | EnrollmentError]:
    """Enroll new devices [(enrollment key, attrs)] in one insert; per request the device and
    its plain token (`uid.secret`, shown only once), or why it was refused."""
    keys = {plain: find_enrollment_key(plain or "") for plain in {k for k, _ in requests}}
    results: list[tuple[Device, str] | EnrollmentError] = []
    new: list[Device] = []
    for plain, attrs in requests:
        key = keys[plain]
        if key is None:
            results.append(
                EnrollmentError(
                    "unknown or revoked enrollment key; ask an app admin for a valid key"
                )
            )
            continue
        uid = f"dev-{secrets.token_hex(10)}"
        secret = secrets.token_urlsafe(32)
        device = Device(app=key.app, uid=uid, token_hash=hash_secret(secret), **clean_attrs(attrs))
        new.append(device)
        results.append((device, f"{uid}.{secret}"))
    # bulk_create sets primary keys on SQLite and PostgreSQL alike.
    Device.objects.bulk_create(new, batch_size=500)
    return results


def enroll_device(enrollment_key: str, attrs: dict) -> tuple[Device, str]:
    """Enroll a new device; returns it and its plain token (`uid.secret`), shown only once."""
    with transaction.atomic():
        [result] = enroll_devices([(enrollment_key, attrs)])
    if isinstance(result, EnrollmentError):
        raise result
    return result


def _split_token(token: str) -> tuple[str, str]:
    uid, _, secret = (token or "").partition(".")
    return uid, secret


def authenticate_devices(tokens: list[str]) -> list[Device | None]:
    """The device each token belongs to (None for a wrong one), in one query for all."""
    wanted = {uid for uid, secret in map(_split_token, tokens) if uid and secret}
    found = {d.uid: d for d in Device.objects.select_related("app").filter(uid__in=wanted)}
    result: list[Device | None] = []
    for token in tokens:
        uid, secret = _split_token(token)
        device = found.get(uid) if uid and secret else None
        if device is None or not hmac.compare_digest(device.token_hash, hash_secret(secret)):
            result.append(None)
        else:
            result.append(device)
    return result


def authenticate_device(token: str) -> Device | None:
    return authenticate_devices([token])[0]


def clean_current(current: dict) -> dict:
    """What a device says it runs, as stored: {task: {"version": n, "digest": "..."}}."""
    return {
        str(k): {"version": int(v["version"]), "digest": str(v.get("digest", ""))[:64]}
        for k, v in current.items()
    }


def record_hellos(hellos: list[tuple[Device, dict, dict]]) -> None:
    """Store what devices said in `hello` (attributes, running versions), only where it changed:
    a reconnect storm of unchanged devices writes nothing here."""
    changed: dict[int, Device] = {}
    fields: set[str] = set()
    for device, attrs, current in hellos:
        new = {**clean_attrs(attrs), "current": clean_current(current)}
        diff = {name: value for name, value in new.items() if getattr(device, name) != value}
        if diff:
            for name, value in diff.items():
                setattr(device, name, value)
            changed[device.pk] = device
            fields.update(diff)
    if changed:
        Device.objects.bulk_update(list(changed.values()), sorted(fields), batch_size=500)


def device_hello(device: Device, attrs: dict, current: dict) -> list[dict]:
    """A device (re)connected and said who it is: store that, answer with its desired state.

    The one-device form of what the ingest writer does for a batch of hellos."""
    from devices import ingest

    item = ingest.Item(kind="hello", device=device, payload={"attrs": attrs, "current": current})
    with transaction.atomic():
        Device.objects.filter(pk=device.pk).update(online=True, last_seen=timezone.now())
        ingest.run_handlers([item])
    if item.error is not None:
        raise item.error
    return item.result or []


def record_presence(connected: list, disconnected: list) -> None:
    """Mark sockets' devices online/offline. Each socket remembers the `last_seen` it wrote
    (`presence_stamp`); a disconnect turns a device offline only if nobody wrote since, so
    the old socket of a device that already reconnected elsewhere (another process, after
    a server was killed or a network dropped) does not hide the new one from the notifier."""
    now = timezone.now()
    if connected:
        Device.objects.filter(pk__in={s.device.pk for s in connected}).update(
            online=True, last_seen=now
        )
        for socket in connected:
            socket.presence_stamp = now
    for socket in disconnected:
        stamp = getattr(socket, "presence_stamp", None)
        if stamp is not None:
            Device.objects.filter(pk=socket.device.pk, last_seen=stamp).update(
                online=False, last_seen=now
            )


# --- ingest handlers (devices/ingest.py); registered in DevicesConfig.ready ------------


def ingest_enroll(items: list) -> None:
    for item, result in zip(
        items,
        enroll_devices([(i.payload["enrollment_key"], i.payload["attrs"]) for i in items]),
        strict=True,
    ):
        if isinstance(result, EnrollmentError):
            item.error = result
        else:
            item.result = result


def ingest_auth(items: list) -> None:
    for item, device in zip(items, authenticate_devices([i.payload for i in items]), strict=True):
        item.result = device


def ingest_connect(items: list) -> None:
    record_presence([i.socket for i in items], [])


def ingest_disconnect(items: list) -> None:
    record_presence([], [i.socket for i in items])


def ingest_hello(items: list) -> None:
    record_hellos([(i.device, i.payload["attrs"], i.payload["current"]) for i in items])


def ingest_run_stats(items: list) -> None:
    from devices.ingest import Rejected

    for item in items:
        try:
            item.result = record_run_stats(item.device, item.payload)
        except ValueError as exc:
            item.error = Rejected(str(exc))


def ingest_upload(items: list) -> None:
    from devices.ingest import Rejected

    for item in items:
        try:
            item.result = store_results(item.device, item.payload["items"])
        except ValueError as exc:
            item.error = Rejected(str(exc))


def record_run_stats(device: Device, msg: dict) -> bool:
    """Store one run_stats message; False if this message id was already stored."""
    try:
        with transaction.atomic():
            RunStat.objects.create(
                device=device,
                message_id=msg["id"][:64],
                task=msg["task"][:100],
                version=max(0, msg["version"]),
                runs=max(0, msg["runs"]),
                errors=max(0, msg["errors"]),
                latency_ms_p50=msg.get("latency_ms_p50"),
                latency_ms_p95=msg.get("latency_ms_p95"),
                last_error=msg.get("last_error"),
            )
    except IntegrityError:
        return False
    return True


def store_results(device: Device, items: list[dict]) -> list[str]:
    """Store tunnel items; returns every key now stored (new or already there), to be acked."""
    keys = [str(item["key"])[:128] for item in items]
    with transaction.atomic():
        present = set(Result.objects.filter(key__in=keys).values_list("key", flat=True))
        fresh = {}
        for item, key in zip(items, keys, strict=True):
            if key not in present and key not in fresh:
                fresh[key] = Result(
                    app_id=device.app_id,
                    device=device,
                    task=str(item["task"])[:100],
                    version=max(0, int(item["version"])),
                    key=key,
                    payload=item["payload"],
                )
        # ignore_conflicts: two connections of one device racing with the same key stay single.
        Result.objects.bulk_create(fresh.values(), ignore_conflicts=True)
    return keys


class GroupError(ValueError):
    """The group cannot be saved; `errors` maps a field to what to fix."""

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))


def save_group(
    app: App,
    *,
    group: DeviceGroup | None,
    name: str,
    kind: str,
    filter: dict,
    member_uids: list[str],
    by: AbstractBaseUser | None,
) -> DeviceGroup:
    """Create (group=None) or update a device group; raises GroupError with what to fix."""
    errors: dict[str, str] = {}
    name = name.strip()
    if not name:
        errors["name"] = "Give the group a name."
    elif DeviceGroup.objects.filter(app=app, name=name).exclude(pk=getattr(group, "pk", None)):
        errors["name"] = f"There is already a group called “{name}” in this app."
    if kind not in GroupKind.values:
        errors["kind"] = "Choose static or dynamic."
    members: list[Device] = []
    if kind == GroupKind.DYNAMIC:
        if "groups" in filter:
            errors["filter"] = "A dynamic group cannot refer to other groups."
        elif problems := targeting.validate_target(filter):
            errors["filter"] = "; ".join(problems)
    elif kind == GroupKind.STATIC:
        members = list(Device.objects.filter(app=app, uid__in=member_uids))
        missing = sorted(set(member_uids) - {d.uid for d in members})
        if missing:
            errors["members"] = "Not devices of this app: " + ", ".join(missing[:10])
    if errors:
        raise GroupError(errors)
    with transaction.atomic():
        created = group is None
        if created:
            group = DeviceGroup(app=app)
        group.name = name
        group.kind = kind
        group.filter = filter if kind == GroupKind.DYNAMIC else {}
        group.save()
        if kind == GroupKind.STATIC:
            group.members.set(members)
        else:
            group.members.clear()
        audit(
            app,
            by,
            "group.create" if created else "group.update",
            "device_group",
            str(group.pk),
            {"name": name, "kind": kind},
        )
        # Targets may name groups: every process's cached view of the app's releases is stale.
        push.release_changed_here(app.pk)
        transaction.on_commit(lambda: push.release_changed_here(app.pk))
        transaction.on_commit(lambda: push.publish_release_changed(app.pk))
    return group
