from __future__ import annotations

import django_filters
from django import forms

from releases.choices import DeploymentState, ReleaseState
from releases.models import Deployment, Release
from walle_web.filters import IntFilter, NameOrIdFilter, object_id, text


class ReleaseFilter(django_filters.FilterSet):
    app = text("app__slug", 64, "App slug.")
    task = NameOrIdFilter(
        name_field="task__name", id_field="task_id", help_text="Task name (or id)."
    )
    state = django_filters.ChoiceFilter(field_name="state", choices=ReleaseState.choices)

    class Meta:
        model = Release
        fields: list[str] = []


class DeploymentFilter(django_filters.FilterSet):
    release = object_id("release_id", "Release id.")
    device = text("device__uid", 40, "Device id.")
    state = django_filters.ChoiceFilter(field_name="state", choices=DeploymentState.choices)

    class Meta:
        model = Deployment
        fields: list[str] = []


class StatesField(forms.CharField):
    """One deployment state or several, comma separated; an unknown one is a 400 that lists
    the states there are."""

    def to_python(self, value):
        value = super().to_python(value)
        states = [s.strip() for s in (value or "").split(",") if s.strip()]
        unknown = [s for s in states if s not in DeploymentState.values]
        if unknown:
            raise forms.ValidationError(
                f"unknown deployment state {', '.join(unknown)}; use one or more of "
                f"{', '.join(DeploymentState.values)} (comma separated)"
            )
        return states or None


class StatesFilter(django_filters.Filter):
    field_class = StatesField


class ReleaseDeploymentFilter(django_filters.FilterSet):
    """The deployments of one release: by state(s) and by stage (1 = the first)."""

    state = StatesFilter(field_name="state", lookup_expr="in")
    stage = IntFilter(method="by_stage", min_value=1, max_value=100, help_text="Stage, from 1.")
    device = text("device__uid", 40, "Device id.")

    class Meta:
        model = Deployment
        fields: list[str] = []

    def by_stage(self, qs, name, value):
        return qs.filter(stage=value - 1)
