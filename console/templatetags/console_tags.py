"""Small formatting filters for console templates."""

from __future__ import annotations

import json

from django import template

from console.diffing import line_class

register = template.Library()


@register.filter
def diffclass(line: str) -> str:
    return line_class(line)


@register.filter
def percent_bp(basis_points) -> str:
    """10000 basis points -> '100%', 150 -> '1.5%'."""
    try:
        value = int(basis_points) / 100
    except (TypeError, ValueError):
        return "?"
    return f"{value:g}%"


@register.filter
def pretty_json(value) -> str:
    return json.dumps(value, indent=2, sort_keys=True)


@register.filter
def compact_json(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(", ", ": "))


@register.filter
def filesize(value) -> str:
    try:
        n = float(value)
    except (TypeError, ValueError):
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


@register.filter
def get(mapping, key):
    try:
        return mapping.get(key)
    except AttributeError:
        return None


@register.filter
def short(value, n: int = 12) -> str:
    return str(value)[: int(n)]


@register.filter
def words(value) -> str:
    """'rolled_back' -> 'rolled back'."""
    return str(value).replace("_", " ")


@register.filter
def share(value) -> str:
    """0.95 -> '95%' (gates are shares between 0 and 1)."""
    try:
        return f"{float(value) * 100:g}%"
    except (TypeError, ValueError):
        return "?"
