from django.contrib import admin

from alerts.models import Alert, Channel, Delivery, ErrorRateRule


@admin.register(Channel)
class ChannelAdmin(admin.ModelAdmin):
    list_display = ["id", "app", "name", "kind", "enabled"]
    exclude = ["secret"]


@admin.register(ErrorRateRule)
class ErrorRateRuleAdmin(admin.ModelAdmin):
    list_display = ["id", "app", "task", "threshold", "window_s", "firing"]


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    list_display = ["id", "app", "event", "subject", "created_at"]
    list_filter = ["event"]


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = ["id", "alert", "channel", "state", "attempts", "next_attempt_at"]
    list_filter = ["state"]
