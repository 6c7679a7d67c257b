"""Query filter types every API list shares (django-filter): typed, bounded, documented.

A bad value answers 400 with what to fix, and drf-spectacular documents each filter with its
type, so `?task=abc`, `?stage=²` or `?release=99999999999999999999` never reach the database.
"""

from __future__ import annotations

import django_filters
from django import forms
from django.db.models import Q, QuerySet

INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1


class IntFilter(django_filters.Filter):
    """A whole number in a range (forms.IntegerField: '1.5' and '²' are refused)."""

    field_class = forms.IntegerField


class StrictBooleanField(forms.CharField):
    """true/false (also 1/0, yes/no); anything else is a 400, not silently no filter."""

    def to_python(self, value):
        value = super().to_python(value)
        if value in ("", None):
            return None
        truth = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
        if value.lower() not in truth:
            raise forms.ValidationError("use true or false")
        return truth[value.lower()]


class BoolFilter(django_filters.BooleanFilter):
    field_class = StrictBooleanField


def object_id(field_name: str, help_text: str) -> IntFilter:
    return IntFilter(field_name=field_name, min_value=1, max_value=INT64_MAX, help_text=help_text)


def text(field_name: str, max_length: int, help_text: str) -> django_filters.CharFilter:
    return django_filters.CharFilter(
        field_name=field_name, max_length=max_length, help_text=help_text
    )


class NameOrIdFilter(django_filters.CharFilter):
    """A task named by name (as users type it) or by id (as links carry it)."""

    def __init__(self, *, name_field: str, id_field: str, **kwargs) -> None:
        kwargs.setdefault("max_length", 100)
        super().__init__(**kwargs)
        self.name_field = name_field
        self.id_field = id_field

    def filter(self, qs: QuerySet, value: str) -> QuerySet:
        if not value:
            return qs
        match = Q(**{self.name_field: value})
        if value.isascii() and value.isdigit() and int(value) <= INT64_MAX:
            match |= Q(**{self.id_field: int(value)})
        return qs.filter(match)


class ListFiltersOnly:
    """Viewset mixin: query filters narrow the list; they never hide the object a detail URL
    names (…/releases/7/deployments/?state=failed filters deployments, not release 7)."""

    def filter_queryset(self, queryset):
        return super().filter_queryset(queryset) if self.action == "list" else queryset
