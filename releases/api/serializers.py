from __future__ import annotations

from rest_framework import serializers

from releases.models import Deployment, DeploymentEvent, Release
from tasks.models import TaskVersion


class ReleaseSerializer(serializers.ModelSerializer):
    app = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    task = serializers.SlugRelatedField(slug_field="name", read_only=True)
    version = serializers.PrimaryKeyRelatedField(
        queryset=TaskVersion.objects.all(), help_text="TaskVersion id."
    )
    version_number = serializers.IntegerField(source="version.number", read_only=True)
    counts = serializers.SerializerMethodField()

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
            "created_at",
            "started_at",
            "stage_started_at",
            "finished_at",
            "counts",
        ]
        extra_kwargs = {
            "delivery": {"required": False},
            "on_error": {"required": False},
            "scheduled_at": {"required": False},
            "salt": {"required": False},
            "stages": {"required": False},
            "target": {"required": False},
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
    version = serializers.PrimaryKeyRelatedField(
        queryset=TaskVersion.objects.all(),
        required=False,
        allow_null=True,
        help_text="TaskVersion id; default: the previous good version.",
    )
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=500)
    skip_stages = serializers.BooleanField(required=False, default=True)


class PreviewSerializer(serializers.Serializer):
    version = serializers.PrimaryKeyRelatedField(
        queryset=TaskVersion.objects.all(), required=False, allow_null=True
    )
    app = serializers.SlugField(required=False)
    target = serializers.JSONField(required=False, default=dict)
    stages = serializers.JSONField(required=False, default=None)
    salt = serializers.CharField(required=False, allow_blank=True, default="")

    def validate(self, attrs):
        if not attrs.get("version") and not attrs.get("app"):
            raise serializers.ValidationError("give the version to release (or the app slug)")
        return attrs


class PinSerializer(serializers.Serializer):
    device = serializers.CharField(help_text="Device uid.")
    version = serializers.PrimaryKeyRelatedField(queryset=TaskVersion.objects.all())
    reason = serializers.CharField(required=False, allow_blank=True, default="")
