"""State changes of devices: enrollment, presence, hello, run stats and tunnel results."""

from __future__ import annotations

import hmac
import json
import secrets
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import App
from accounts.services import audit, find_enrollment_key, hash_secret
from devices import push, targeting
from devices.choices import GroupKind
from devices.models import Device, DeviceGroup, Result, RunStat
from devices.publish import group_send
from walle_device import protocol
from walle_device.protocol import ATTR_FIELDS, ProtocolError

# A run's last error (type, message, traceback) is shown on the device page; more is noise.
# The device runtime sends at most 5,000 characters of it (walle_device/runner.py).
MAX_LAST_ERROR_BYTES = 32 * 1024


class EnrollmentError(ValueError):
    """Enrollment refused; the message says why."""


def clean_attrs(attrs: dict) -> dict:
    """The known attributes, checked against the protocol's bounds (which the columns match).

    Raises ProtocolError (a ValueError) naming the attribute that is too long or mistyped.
    """
    protocol.check_attrs(attrs)
    return {name: attrs[name] for name in ATTR_FIELDS if name in attrs}


def enroll_devices(
    requests: list[tuple[str, dict]],
) -> list[tuple[Device, str] | EnrollmentError | ProtocolError]:
    """Enroll new devices [(enrollment key, attrs)] in one insert; per request the device and
    its plain token (`uid.secret`, shown only once), or why it was refused (ProtocolError for
    attributes out of bounds, EnrollmentError for a bad key)."""
    keys = {plain: find_enrollment_key(plain or "") for plain in {k for k, _ in requests}}
    results: list[tuple[Device, str] | EnrollmentError | ProtocolError] = []
    new: list[Device] = []
    for plain, attrs in requests:
        try:
            attrs = clean_attrs(attrs)
        except ProtocolError as exc:
            results.append(exc)
            continue
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
        device = Device(app=key.app, uid=uid, token_hash=hash_secret(secret), **attrs)
        new.append(device)
        results.append((device, f"{uid}.{secret}"))
    # bulk_create sets primary keys on SQLite and PostgreSQL alike.
    Device.objects.bulk_create(new, batch_size=500)
    return results


def enroll_device(enrollment_key: str, attrs: dict) -> tuple[Device, str]:
    """Enroll a new device; returns it and its plain token (`uid.secret`), shown only once.

    Raises ProtocolError for attributes out of bounds, EnrollmentError for a bad key."""
    with transaction.atomic():
        [result] = enroll_devices([(enrollment_key, attrs)])
    if isinstance(result, EnrollmentError | ProtocolError):
        raise result
    return result


def _split_token(token: str) -> tuple[str, str]:
    """(uid, secret) of a token, or ("", "") for one that cannot be a device's."""
    uid, _, secret = (token or "").partition(".")
    if len(uid) > 40 or len(secret) > 200 or "\x00" in token:
        return "", ""
    return uid, secret


def authenticate_devices(tokens: list[str]) -> list[Device | None]:
    """The active device each token belongs to (None for an unknown, wrong or retired one), in
    one query for all."""
    wanted = {uid for uid, secret in map(_split_token, tokens) if uid and secret}
    found = {
        d.uid: d
        for d in Device.objects.select_related("app").filter(
            uid__in=wanted, retired_at__isnull=True
        )
    }
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


def retire_device(device: Device, *, by: AbstractBaseUser | None = None) -> Device:
    """Revoke a device's token for good; its row, deployments and results stay as history.

    After commit, one notice on the push channel makes every server process close the
    device's open sockets (devices/limits.close_devices).
    """
    with transaction.atomic():
        locked = Device.objects.select_for_update(no_key=True).get(pk=device.pk)
        if locked.retired_at is not None:
            return locked
        locked.retired_at = timezone.now()
        # An empty hash matches no secret, so the token is dead even for a reader that does
        # not look at retired_at.
        locked.token_hash = ""
        locked.online = False
        locked.save(update_fields=["retired_at", "token_hash", "online"])
        audit(locked.app, by, "device.retire", "device", locked.uid)
        uid = locked.uid
        transaction.on_commit(
            lambda: group_send(push.NOTICE_GROUP, {"type": "device.revoked", "device_uids": [uid]})
        )
    return locked


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
    # Sockets connected in one batch share its stamp: one statement per stamp, not per socket
    # (a reconnect storm closes thousands of sockets at once).
    by_stamp: dict[Any, set[int]] = {}
    for socket in disconnected:
        stamp = getattr(socket, "presence_stamp", None)
        if stamp is not None:
            by_stamp.setdefault(stamp, set()).add(socket.device.pk)
    for stamp, pks in by_stamp.items():
        Device.objects.filter(pk__in=pks, last_seen=stamp).update(online=False, last_seen=now)


# --- ingest handlers (devices/ingest.py); registered in DevicesConfig.ready ------------


def ingest_enroll(items: list) -> None:
    for item, result in zip(
        items,
        enroll_devices([(i.payload["enrollment_key"], i.payload["attrs"]) for i in items]),
        strict=True,
    ):
        if isinstance(result, EnrollmentError | ProtocolError):
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
    valid = []
    for item in items:
        try:
            clean_attrs(item.payload["attrs"])
            for task, cur in item.payload["current"].items():
                protocol.check_fields(f"current[{task!r}]", cur, protocol.CURRENT_FIELDS)
        except ProtocolError as exc:  # this hello only: the others of the batch go on
            item.error = exc
            continue
        valid.append(item)
    record_hellos([(i.device, i.payload["attrs"], i.payload["current"]) for i in valid])


def ingest_run_stats(items: list) -> None:
    """A batch's run_stats in one INSERT: checked one by one, stored together, each item's
    result saying whether its message id was new (a resent message is acked, not stored)."""
    from devices.ingest import Rejected

    fresh: dict[tuple[int, str], tuple] = {}
    for item in items:
        try:
            _check_run_stats(item.payload)
        except ProtocolError as exc:  # out of bounds: the device drops it (a final code)
            item.error = exc
            continue
        except ValueError as exc:
            item.error = Rejected(str(exc))
            continue
        fresh.setdefault((item.device.pk, item.payload["id"]), (item, []))[1].append(item)
    if not fresh:
        return
    stored = set(
        RunStat.objects.filter(
            device_id__in={device_id for device_id, _ in fresh},
            message_id__in={message_id for _, message_id in fresh},
        ).values_list("device_id", "message_id")
    )
    new = [key for key in fresh if key not in stored]
    RunStat.objects.bulk_create(
        [_run_stat(fresh[key][0].device, fresh[key][0].payload) for key in new],
        batch_size=500,
        ignore_conflicts=True,
    )
    new_keys = set(new)
    for key, (_, same) in fresh.items():
        for i, item in enumerate(same):
            item.result = key in new_keys and i == 0


def ingest_upload(items: list) -> None:
    from devices.ingest import Rejected

    for item in items:
        try:
            item.result = store_results(item.device, item.payload["items"])
        except ProtocolError as exc:  # out of bounds: the device drops it (a final code)
            item.error = exc
        except ValueError as exc:
            item.error = Rejected(str(exc))


def _storable_json(value: object, what: str, max_bytes: int | None = None) -> None:
    """Raise ProtocolError unless `value` is JSON every supported database stores as sent."""
    try:
        # ASCII output turns NULs and surrogates into \u escapes, which loads_strict checks.
        protocol.loads_strict(json.dumps(value, allow_nan=False))  # also depth, 64-bit ints
    except (TypeError, ValueError, RecursionError) as exc:
        raise ProtocolError("invalid", f"{what}: {exc}") from None
    if max_bytes is None:
        return
    size = len(json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise ProtocolError("invalid", f"{what} is {size} bytes; at most {max_bytes} allowed")


def record_run_stats(device: Device, msg: dict) -> bool:
    """Store one run_stats message; False if this message id was already stored.

    Validates every field against the protocol's bounds first (the consumer already did, a
    batch writer may not have): a value out of range raises ProtocolError, nothing is stored.
    """
    _check_run_stats(msg)
    try:
        with transaction.atomic():
            _run_stat(device, msg).save(force_insert=True)
    except IntegrityError:
        return False
    return True


def _check_run_stats(msg: dict) -> None:
    protocol.check_fields("run_stats", msg, protocol.SCHEMAS["run_stats"])
    if msg.get("last_error") is not None:
        _storable_json(msg["last_error"], "run_stats.last_error", MAX_LAST_ERROR_BYTES)


def _run_stat(device: Device, msg: dict) -> RunStat:
    return RunStat(
        device=device,
        message_id=msg["id"],
        task=msg["task"],
        version=msg["version"],
        runs=msg["runs"],
        errors=msg["errors"],
        latency_ms_p50=msg.get("latency_ms_p50"),
        latency_ms_p95=msg.get("latency_ms_p95"),
        last_error=msg.get("last_error"),
    )


def valid_items(items: list) -> dict[str, dict]:
    """The storable items by key (first one wins); invalid ones are left out, never acked."""
    valid: dict[str, dict] = {}
    for i, item in enumerate(items):
        try:
            protocol.check_item(item, f"items[{i}]")
            _storable_json(item["payload"], f"items[{i}].payload")
        except ProtocolError:
            continue
        valid.setdefault(item["key"], item)
    return valid


def store_results(device: Device, items: list[dict]) -> list[str]:
    """Store tunnel items; returns the keys this device now has stored (new or before): the ack.

    Keys are scoped to the device. The ack comes from reading back what is stored, so an item
    the database ignored (SQLite's INSERT OR IGNORE skips CHECK failures too) is never acked,
    and the device keeps it for a later attempt.
    """
    valid = valid_items(items)
    if not valid:
        return []
    keys = list(valid)
    with transaction.atomic():
        present = set(
            Result.objects.filter(device=device, key__in=keys).values_list("key", flat=True)
        )
        fresh = [
            Result(
                app_id=device.app_id,
                device=device,
                task=item["task"],
                version=item["version"],
                key=key,
                payload=item["payload"],
            )
            for key, item in valid.items()
            if key not in present
        ]
        if fresh:
            # ignore_conflicts: two connections of one device racing with a key stay single.
            Result.objects.bulk_create(fresh, ignore_conflicts=True)
            present = set(
                Result.objects.filter(device=device, key__in=keys).values_list("key", flat=True)
            )
    return [key for key in keys if key in present]


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
