"""State changes of devices: enrollment, presence, hello, run stats and tunnel results."""

from __future__ import annotations

import hmac
import secrets

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import App
from accounts.services import audit, find_enrollment_key, hash_secret
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


def enroll_device(enrollment_key: str, attrs: dict) -> tuple[Device, str]:
    """Enroll a new device; returns it and its plain token (`uid.secret`), shown only once."""
    key = find_enrollment_key(enrollment_key or "")
    if key is None:
        raise EnrollmentError("unknown or revoked enrollment key; ask an app admin for a valid key")
    uid = f"dev-{secrets.token_hex(10)}"
    secret = secrets.token_urlsafe(32)
    device = Device.objects.create(
        app=key.app, uid=uid, token_hash=hash_secret(secret), **clean_attrs(attrs)
    )
    return device, f"{uid}.{secret}"


def authenticate_device(token: str) -> Device | None:
    uid, _, secret = (token or "").partition(".")
    if not uid or not secret:
        return None
    device = Device.objects.select_related("app").filter(uid=uid).first()
    if device is None or not hmac.compare_digest(device.token_hash, hash_secret(secret)):
        return None
    return device


def device_hello(device: Device, attrs: dict, current: dict) -> list[dict]:
    """A device (re)connected and said who it is: store that, answer with its desired state."""
    from releases.services import desired_state

    fields = clean_attrs(attrs)
    with transaction.atomic():
        for name, value in fields.items():
            setattr(device, name, value)
        device.current = {
            str(k): {"version": int(v["version"]), "digest": str(v.get("digest", ""))[:64]}
            for k, v in current.items()
        }
        device.online = True
        device.last_seen = timezone.now()
        device.save(update_fields=[*fields, "current", "online", "last_seen"])
        return desired_state(device)


def set_presence(device: Device, online: bool) -> None:
    Device.objects.filter(pk=device.pk).update(online=online, last_seen=timezone.now())


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
    from releases import targeting

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
    return group
