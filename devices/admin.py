from django.contrib import admin

from devices.models import Device, DeviceGroup, Result, RunStat
from devices.services import retire_device


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin):
    list_display = [
        "uid",
        "app",
        "model",
        "os",
        "os_version",
        "app_version",
        "region",
        "online",
        "last_seen",
        "retired_at",
    ]
    list_filter = ["app", "online", "os", "region"]
    search_fields = ["uid", "model"]
    readonly_fields = ["token_hash", "retired_at"]
    actions = ["retire"]

    # Devices are retired, never deleted: their deployments, run stats and results are history.
    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.action(description="Retire: revoke the token and close the device's sockets")
    def retire(self, request, queryset) -> None:
        for device in queryset.filter(retired_at__isnull=True):
            retire_device(device, by=request.user)


@admin.register(DeviceGroup)
class DeviceGroupAdmin(admin.ModelAdmin):
    list_display = ["name", "app", "kind"]
    list_filter = ["app", "kind"]
    raw_id_fields = ["members"]


@admin.register(Result)
class ResultAdmin(admin.ModelAdmin):
    list_display = ["received_at", "app", "device", "task", "version", "key"]
    list_filter = ["app", "task"]


@admin.register(RunStat)
class RunStatAdmin(admin.ModelAdmin):
    list_display = ["received_at", "device", "task", "version", "runs", "errors", "latency_ms_p50"]
