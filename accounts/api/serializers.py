from __future__ import annotations

from rest_framework import serializers

from accounts.models import App, AuditEntry
from accounts.permissions import role_in


class AppSerializer(serializers.ModelSerializer):
    role = serializers.SerializerMethodField()

    class Meta:
        model = App
        fields = ["id", "slug", "name", "created_at", "role"]
        read_only_fields = ["id", "created_at", "role"]

    def get_role(self, app: App) -> str | None:
        return role_in(self.context["request"].user, app)


class EnrollmentKeyCreateSerializer(serializers.Serializer):
    label = serializers.CharField(max_length=100, default="default")


class AuditEntrySerializer(serializers.ModelSerializer):
    user = serializers.StringRelatedField()

    class Meta:
        model = AuditEntry
        fields = ["id", "at", "user", "action", "target_type", "target_id", "detail"]
