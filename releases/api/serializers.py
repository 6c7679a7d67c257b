from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from devices import targeting
from releases import policy
from releases.models import Deployment, DeploymentEvent, Release
from tasks.api.serializers import VisibleVersionField


# Typed in the OpenAPI schema from the same tables that validate them (releases/policy.py,
# devices/targeting.py); the service layer does the checking and says what to fix.
@extend_schema_field(policy.stages_schema())
class StagesField(serializers.JSONField):
    pass


@extend_schema_field(policy.delivery_schema())
class DeliveryField(serializers.JSONField):
    pass


@extend_schema_field(targeting.target_schema())
class TargetField(serializers.JSONField):
    pass


class ReleaseSerializer(serializers.ModelSerializer):
    app = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    task = serializers.SlugRelatedField(slug_field="name", read_only=True)
    version = VisibleVersionField(help_text="TaskVersion id.")
    version_number = serializers.IntegerField(source="version.number", read_only=True)
    counts = serializers.SerializerMethodField()
    target = TargetField(required=False)
    stages = StagesField(required=False)
    delivery = DeliveryField(required=False)

    class Meta:
        model = Release
        fields = [
            "id",
            "app",
            "task",
            "version",
            "version_number",
            "name",
            "target",
            "stages",
            "delivery",
            "on_error",
            "salt",
            "state",
            "current_stage",
            "rollback_of",
            "reason",
            "worker_error",
            "worker_error_at",
            "scheduled_at",
            "created_at",
            "started_at",
            "stage_started_at",
            "finished_at",
            "counts",
        ]
        read_only_fields = [
            "id",
            "app",
            "task",
            "state",
            "current_stage",
            "rollback_of",
            "reason",
            "worker_error",
            "worker_error_at",
            "created_at",
            "started_at",
            "stage_started_at",
            "finished_at",
            "counts",
        ]
        extra_kwargs = {
            "on_error": {"required": False},
            "scheduled_at": {"required": False},
            "salt": {"required": False},
        }

    def get_counts(self, release: Release) -> dict[str, int]:
        counts = getattr(release, "state_counts", None)
        if counts is None:
            from releases.monitoring import deployment_counts

            counts = deployment_counts(release)
        return counts


class DeploymentEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = DeploymentEvent
        fields = ["state", "source", "error_code", "message", "at"]


class DeploymentSerializer(serializers.ModelSerializer):
    device = serializers.SlugRelatedField(slug_field="uid", read_only=True)

    class Meta:
        model = Deployment
        fields = [
            "id",
            "release",
            "device",
            "bucket",
            "stage",
            "state",
            "attempts",
            "error_code",
            "error_message",
            "created_at",
            "updated_at",
            "notified_at",
            "finished_at",
        ]


class ReasonSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=500)


class RollbackSerializer(serializers.Serializer):
    version = VisibleVersionField(
        required=False,
        allow_null=True,
        help_text="TaskVersion id; default: the previous good version.",
    )
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=500)
    skip_stages = serializers.BooleanField(required=False, default=True)


class PreviewSerializer(serializers.Serializer):
    version = VisibleVersionField(required=False, allow_null=True)
    app = serializers.SlugField(required=False, max_length=64)
    target = TargetField(required=False, default=dict)
    stages = StagesField(required=False, default=None, allow_null=True)
    salt = serializers.CharField(required=False, allow_blank=True, default="", max_length=64)

    def validate(self, attrs):
        if not attrs.get("version") and not attrs.get("app"):
            raise serializers.ValidationError("give the version to release (or the app slug)")
        return attrs


class PreviewResultSerializer(serializers.Serializer):
    total = serializers.IntegerField(help_text="Devices the target reaches now.")
    stages = serializers.ListField(
        child=serializers.IntegerField(), help_text="Devices reached by each stage (cumulative)."
    )
    salt = serializers.CharField()


class PinSerializer(serializers.Serializer):
    device = serializers.CharField(help_text="Device uid.", max_length=40)
    version = VisibleVersionField()
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=200)


class PinOutSerializer(serializers.Serializer):
    device = serializers.CharField(help_text="Device uid.")
    task = serializers.CharField(help_text="Task name.")
    version = serializers.IntegerField(help_text="Version number the device is held at.")
    version_id = serializers.IntegerField(required=False, help_text="TaskVersion id.")
    reason = serializers.CharField(required=False)
