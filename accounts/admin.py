from django.contrib import admin

from accounts.models import App, AuditEntry, EnrollmentKey, Membership


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0


@admin.register(App)
class AppAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "created_at"]
    search_fields = ["slug", "name"]
    inlines = [MembershipInline]


@admin.register(EnrollmentKey)
class EnrollmentKeyAdmin(admin.ModelAdmin):
    list_display = ["app", "label", "prefix", "created_at", "revoked_at"]
    readonly_fields = ["prefix", "key_hash"]


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    list_display = ["at", "app", "user", "action", "target_type", "target_id"]
    list_filter = ["app", "action"]

    def has_change_permission(self, request, obj=None):
        return False  # append-only
