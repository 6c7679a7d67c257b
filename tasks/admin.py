from django.contrib import admin

from tasks.models import Blob, Task, TaskVersion, VersionFile


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ["name", "app", "scene", "created_at"]
    list_filter = ["app"]
    search_fields = ["name"]


class VersionFileInline(admin.TabularInline):
    model = VersionFile
    extra = 0
    can_delete = False
    readonly_fields = ["path", "blob"]


@admin.register(TaskVersion)
class TaskVersionAdmin(admin.ModelAdmin):
    list_display = ["task", "number", "entry_point", "total_size", "created_at"]
    list_filter = ["task__app"]
    inlines = [VersionFileInline]

    def has_change_permission(self, request, obj=None):
        return False  # versions are immutable


@admin.register(Blob)
class BlobAdmin(admin.ModelAdmin):
    list_display = ["sha256", "size", "created_at"]
