from __future__ import annotations

import django_filters

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


class StatesFilter(django_filters.BaseInFilter, django_filters.ChoiceFilter):
    """One deployment state or several, comma separated; an unknown one is a 400."""


class ReleaseDeploymentFilter(django_filters.FilterSet):
    """The deployments of one release: by state(s) and by stage (1 = the first)."""

    state = StatesFilter(field_name="state", lookup_expr="in", choices=DeploymentState.choices)
    stage = IntFilter(method="by_stage", min_value=1, max_value=100, help_text="Stage, from 1.")
    device = text("device__uid", 40, "Device id.")

    class Meta:
        model = Deployment
        fields: list[str] = []

    def by_stage(self, qs, name, value):
        return qs.filter(stage=value - 1)
