from __future__ import annotations

import django_filters

from tasks.models import Task, TaskVersion
from walle_web.filters import NameOrIdFilter, text


class TaskFilter(django_filters.FilterSet):
    app = text("app__slug", 64, "App slug.")

    class Meta:
        model = Task
        fields: list[str] = []


class TaskVersionFilter(django_filters.FilterSet):
    app = text("task__app__slug", 64, "App slug.")
    task = NameOrIdFilter(
        name_field="task__name", id_field="task_id", help_text="Task name (or id)."
    )

    class Meta:
        model = TaskVersion
        fields: list[str] = []
