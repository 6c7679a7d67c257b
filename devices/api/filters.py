from __future__ import annotations

import django_filters

from devices.models import Device, Result
from walle_device.protocol import ATTR_MAX_LEN, INT32_MAX
from walle_web.filters import BoolFilter, IntFilter, text


class DeviceFilter(django_filters.FilterSet):
    app = text("app__slug", 64, "App slug.")
    online = BoolFilter(field_name="online", help_text="Connected now.")
    model = text("model", ATTR_MAX_LEN, "Exact device model.")
    retired = BoolFilter(
        field_name="retired_at",
        lookup_expr="isnull",
        exclude=True,
        help_text="Retired by an admin.",
    )

    class Meta:
        model = Device
        fields: list[str] = []


class ResultFilter(django_filters.FilterSet):
    app = text("app__slug", 64, "App slug.")
    task = text("task", 100, "Task name.")
    device = text("device__uid", 40, "Device id.")
    version = IntFilter(field_name="version", min_value=0, max_value=INT32_MAX)

    class Meta:
        model = Result
        fields: list[str] = []
