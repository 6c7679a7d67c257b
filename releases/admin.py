from django.contrib import admin

from releases.models import Deployment, DeploymentEvent, Release


@admin.register(Release)
class ReleaseAdmin(admin.ModelAdmin):
    list_display = ["id", "app", "task", "version", "state", "current_stage", "created_at"]
    list_filter = ["app", "state"]


class DeploymentEventInline(admin.TabularInline):
    model = DeploymentEvent
    extra = 0
    can_delete = False
    readonly_fields = ["state", "source", "error_code", "message", "at"]


@admin.register(Deployment)
class DeploymentAdmin(admin.ModelAdmin):
    list_display = ["id", "release", "device", "bucket", "stage", "state", "attempts", "updated_at"]
    list_filter = ["state"]
    raw_id_fields = ["device", "release"]
    inlines = [DeploymentEventInline]
