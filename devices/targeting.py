"""Which devices a target reaches: attribute filters, groups and deterministic buckets.

`matches` and `bucket` are pure functions of a device's attributes, so the server, the rollout
worker and the tests all agree without a database round trip. `reached_devices` is the one
database question "which enrolled devices does this target reach"; releases, the console and
monitoring all ask it here (the devices app knows devices and groups, releases build on it).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import mmh3
from django.db.models import Q

BUCKETS = 10_000

# Filter keys a target may use; validate_target rejects anything else.
TARGET_KEYS = {
    "device_ids": list,
    "exclude_device_ids": list,
    "models": list,
    "regions": list,
    "os": list,
    "tags_all": list,
    "tags_any": list,
    "app_version": str,
    "os_version": str,
    "groups": list,
}


def bucket(salt: str, device_uid: str) -> int:
    """Deterministic bucket in [0, 10000): the same device keeps its bucket for the same salt."""
    return mmh3.hash(f"{salt}:{device_uid}", signed=False) % BUCKETS


_VERSION_PART = re.compile(r"\d+")


def parse_version(text: str) -> tuple[int, ...]:
    """'2.10.3-beta' -> (2, 10, 3); missing parts count as 0 when compared."""
    parts = [int(p) for p in _VERSION_PART.findall(text.split("-")[0].split("+")[0])]
    return tuple(parts) if parts else (0,)


def _cmp(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    n = max(len(a), len(b))
    a = a + (0,) * (n - len(a))
    b = b + (0,) * (n - len(b))
    return (a > b) - (a < b)


_RANGE_ITEM = re.compile(r"^\s*(>=|<=|>|<|==|=|!=|\^|~)?\s*(\d+(?:\.\d+)*)\s*$")


def parse_range(spec: str) -> list[tuple[str, tuple[int, ...]]]:
    """'>=2.0, <3' -> [('>=', (2, 0)), ('<', (3,))]; raises ValueError on bad syntax."""
    items = []
    for raw in spec.split(","):
        if not raw.strip():
            continue
        m = _RANGE_ITEM.match(raw)
        if not m:
            raise ValueError(
                f"bad version range item {raw.strip()!r}; use e.g. '>=2.1,<3' or '^2.1'"
            )
        items.append((m.group(1) or "==", parse_version(m.group(2))))
    if not items:
        raise ValueError("empty version range")
    return items


def version_in_range(version: str, spec: str) -> bool:
    if not version:
        return False
    v = parse_version(version)
    for op, bound in parse_range(spec):
        c = _cmp(v, bound)
        if op in ("==", "="):
            ok = c == 0 if len(bound) >= len(v) else v[: len(bound)] == bound
        elif op == "!=":
            ok = c != 0
        elif op == ">=":
            ok = c >= 0
        elif op == ">":
            ok = c > 0
        elif op == "<=":
            ok = c <= 0
        elif op == "<":
            ok = c < 0
        elif op == "^":  # same major, at least bound
            ok = c >= 0 and v[:1] == bound[:1]
        else:  # "~": same major.minor, at least bound
            ok = c >= 0 and v[:2] == (*bound, 0)[:2]
        if not ok:
            return False
    return True


# Bounds of a target, so a stored target stays cheap to evaluate for every device.
MAX_LIST = {"device_ids": 10_000, "exclude_device_ids": 10_000, "groups": 100}
MAX_LIST_DEFAULT = 1_000
MAX_STRING = 200
MAX_ROW_ID = 2**63 - 1


def validate_target(target: object) -> list[str]:
    if not isinstance(target, dict):
        return ["target must be a JSON object of filters"]
    errors = []
    for key, value in target.items():
        expected = TARGET_KEYS.get(key)
        if expected is None:
            errors.append(
                f"unknown target filter {str(key)[:40]!r}; known: {', '.join(sorted(TARGET_KEYS))}"
            )
        elif not isinstance(value, expected):
            errors.append(f"target filter {key!r} must be a {expected.__name__}")
        elif expected is str and len(value) > MAX_STRING:
            errors.append(f"target filter {key!r} is longer than {MAX_STRING} characters")
        elif expected is list and len(value) > MAX_LIST.get(key, MAX_LIST_DEFAULT):
            errors.append(
                f"target filter {key!r} lists {len(value)} entries; at most {MAX_LIST.get(key, MAX_LIST_DEFAULT)}"
            )
        elif key == "groups" and not all(
            isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_ROW_ID for v in value
        ):
            errors.append("target filter 'groups' must be a list of device group ids (integers)")
        elif (
            expected is list
            and key != "groups"
            and not all(isinstance(v, str) and len(v) <= MAX_STRING for v in value)
        ):
            errors.append(
                f"target filter {key!r} must be a list of strings of at most {MAX_STRING} characters"
            )
    for key in ("app_version", "os_version"):
        if isinstance(target.get(key), str) and len(target[key]) <= MAX_STRING:
            try:
                parse_range(target[key])
            except ValueError as exc:
                errors.append(f"{key}: {exc}")
    for key in ("models", "regions", "os", "device_ids", "tags_any"):
        if isinstance(target.get(key), list) and not target[key]:
            errors.append(
                f"target filter {key!r} is an empty list, which matches no device; remove it to match all"
            )
    return errors


def target_schema() -> dict:
    """The OpenAPI schema of a target (one source with validate_target)."""
    text_list = {"type": "array", "items": {"type": "string", "maxLength": MAX_STRING}}
    props: dict = {}
    for key, kind in TARGET_KEYS.items():
        if key == "groups":
            props[key] = {
                "type": "array",
                "maxItems": MAX_LIST["groups"],
                "items": {"type": "integer", "minimum": 1},
                "description": "device group ids of the app; a device in any of them matches",
            }
        elif kind is list:
            props[key] = {**text_list, "maxItems": MAX_LIST.get(key, MAX_LIST_DEFAULT)}
        else:
            props[key] = {
                "type": "string",
                "maxLength": MAX_STRING,
                "description": "version range, e.g. '>=2.1,<3' or '^2.1'",
            }
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": props,
        "description": "Attribute filters; every given filter must match. Empty: every device of the app.",
    }


def _model_matches(model: str, patterns: list[str]) -> bool:
    # "Pixel*" is a prefix; anything else an exact model name.
    return any(model.startswith(p[:-1]) if p.endswith("*") else model == p for p in patterns)


def matches(target: dict, uid: str, attrs: dict, group_ids: frozenset[int] = frozenset()) -> bool:
    """Does a device with these attributes fall inside the target (before stage bucketing)?"""
    if uid in target.get("exclude_device_ids", ()):
        return False
    if "device_ids" in target and uid not in target["device_ids"]:
        return False
    if "models" in target and not _model_matches(attrs.get("model", ""), target["models"]):
        return False
    if "regions" in target and attrs.get("region", "") not in target["regions"]:
        return False
    if "os" in target and attrs.get("os", "") not in target["os"]:
        return False
    tags = set(attrs.get("tags") or ())
    if "tags_all" in target and not set(target["tags_all"]) <= tags:
        return False
    if "tags_any" in target and not set(target["tags_any"]) & tags:
        return False
    if "app_version" in target and not version_in_range(
        attrs.get("app_version", ""), target["app_version"]
    ):
        return False
    if "os_version" in target and not version_in_range(
        attrs.get("os_version", ""), target["os_version"]
    ):
        return False
    return not ("groups" in target and not set(target["groups"]) & group_ids)


# --- the database side -----------------------------------------------------------------

# Device columns targeting looks at, in the order `DeviceRow.attrs` is built from.
ATTR_COLUMNS = ("app_version", "os", "os_version", "model", "region", "tags", "engine_version")


@dataclass(frozen=True, slots=True)
class DeviceRow:
    """A device as targeting sees it: read from value rows, never a model instance (10k of
    those cost seconds at release start)."""

    id: int
    uid: str
    online: bool
    attrs: dict


@dataclass
class Groups:
    """The device groups of an app as targeting needs them: dynamic filters, static members."""

    dynamic: dict[int, dict]
    static: dict[int, set[int]]

    def ids_for(self, device_id: int, uid: str, attrs: dict) -> frozenset[int]:
        """The groups a device belongs to (static membership, or a dynamic filter it matches)."""
        found = [g for g, members in self.static.items() if device_id in members]
        found += [g for g, spec in self.dynamic.items() if matches(spec, uid, attrs)]
        return frozenset(found)


def load_groups(app_id: int, ids: list[int] | None = None) -> Groups:
    """Groups of an app (only `ids` when given) with their static members, in two queries."""
    from devices.choices import GroupKind
    from devices.models import DeviceGroup

    qs = DeviceGroup.objects.filter(app_id=app_id)
    if ids is not None:
        qs = qs.filter(pk__in=ids)
    groups = Groups(dynamic={}, static={})
    for pk, kind, spec in qs.values_list("pk", "kind", "filter"):
        if kind == GroupKind.STATIC:
            groups.static[pk] = set()
        else:
            groups.dynamic[pk] = spec or {}
    for group_id, device_id in DeviceGroup.members.through.objects.filter(
        devicegroup_id__in=list(groups.static)
    ).values_list("devicegroup_id", "device_id"):
        groups.static[group_id].add(device_id)
    return groups


def _sql_prefilter(qs, target: dict):
    """Narrow with SQL where a filter maps onto a column; `matches` stays the source of truth."""
    if "device_ids" in target:
        qs = qs.filter(uid__in=target["device_ids"])
    if target.get("models"):
        by_model = Q()
        for pattern in target["models"]:
            by_model |= (
                Q(model__startswith=pattern[:-1]) if pattern.endswith("*") else Q(model=pattern)
            )
        qs = qs.filter(by_model)
    if target.get("regions"):
        qs = qs.filter(region__in=target["regions"])
    if target.get("os"):
        qs = qs.filter(os__in=target["os"])
    return qs


def reached_devices(app_id: int, target: dict, *, exclude=None) -> Iterator[DeviceRow]:
    """Every enrolled device of the app inside `target` (before stage bucketing).

    `exclude` is an extra condition on Device rows to leave out in SQL, e.g. "already has a
    deployment of this release" as an anti-join, so a steady-state rollout tick looks only at
    devices enrolled since instead of the whole fleet.
    """
    from devices.models import Device

    qs = Device.objects.filter(app_id=app_id)
    if exclude is not None:
        qs = qs.exclude(exclude)
    qs = _sql_prefilter(qs, target).order_by()
    groups = load_groups(app_id, target["groups"]) if "groups" in target else None
    for row in qs.values_list("id", "uid", "online", *ATTR_COLUMNS).iterator(chunk_size=5000):
        attrs = dict(zip(ATTR_COLUMNS, row[3:], strict=True))
        attrs["tags"] = list(attrs["tags"] or ())
        group_ids = groups.ids_for(row[0], row[1], attrs) if groups else frozenset()
        if matches(target, row[1], attrs, group_ids):
            yield DeviceRow(id=row[0], uid=row[1], online=row[2], attrs=attrs)
