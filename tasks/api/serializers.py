from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accounts.permissions import visible_apps
from tasks.models import Task, TaskVersion
from walle_device.protocol import loads_strict


class VisibleAppField(serializers.SlugRelatedField):
    """An app slug among the caller's apps: another tenant's app reads as nonexistent."""

    def __init__(self, **kwargs) -> None:
        super().__init__(slug_field="slug", **kwargs)

    def get_queryset(self):
        return visible_apps(self.context["request"].user)


@extend_schema_field(OpenApiTypes.INT)
class VisibleVersionField(serializers.PrimaryKeyRelatedField):
    """A TaskVersion id among the caller's apps' versions: a foreign id reads as nonexistent
    (a 400 like a missing one), never as a 403 that names the other app."""

    def get_queryset(self):
        return TaskVersion.objects.filter(
            task__app__in=visible_apps(self.context["request"].user)
        ).select_related("task", "task__app")


class TaskSerializer(serializers.ModelSerializer):
    app = VisibleAppField()
    latest_version = serializers.SerializerMethodField()

    class Meta:
        model = Task
        fields = ["id", "app", "name", "scene", "description", "created_at", "latest_version"]
        read_only_fields = ["id", "created_at", "latest_version"]

    def get_latest_version(self, task: Task) -> int | None:
        latest = max((v.number for v in task.versions.all()), default=None)
        return latest


class TaskVersionSerializer(serializers.ModelSerializer):
    task = serializers.SlugRelatedField(slug_field="name", read_only=True)
    parent = serializers.SlugRelatedField(slug_field="number", read_only=True, allow_null=True)
    files = serializers.SerializerMethodField()

    class Meta:
        model = TaskVersion
        fields = [
            "id",
            "task",
            "number",
            "parent",
            "entry_point",
            "config",
            "notes",
            "digest",
            "total_size",
            "files",
            "created_at",
        ]

    def get_files(self, version: TaskVersion) -> list[dict]:
        return version.manifest["files"]


class VersionUploadSerializer(serializers.Serializer):
    """A new version: either `files` (+ optional `paths`) or one `bundle` .zip."""

    files = serializers.ListField(
        child=serializers.FileField(), required=False, help_text="The task's files."
    )
    paths = serializers.CharField(
        required=False, help_text="JSON list of paths, one per file, for files in folders."
    )
    bundle = serializers.FileField(
        required=False, help_text="A .zip of the task; may carry walle.json."
    )
    entry_point = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=255
    )
    config = serializers.CharField(
        required=False, default="", help_text="JSON object.", max_length=1_000_000
    )
    notes = serializers.CharField(required=False, allow_blank=True, default="", max_length=10_000)

    def validate_config(self, value: str) -> dict | None:
        if not value:
            return None
        try:
            parsed = loads_strict(value)
        except ValueError as exc:
            raise serializers.ValidationError(f"not valid JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise serializers.ValidationError("must be a JSON object")
        return parsed

    def validate_paths(self, value: str) -> list[str]:
        try:
            parsed = loads_strict(value)
        except ValueError as exc:
            raise serializers.ValidationError(f"not valid JSON: {exc}") from None
        if not isinstance(parsed, list) or not all(isinstance(p, str) for p in parsed):
            raise serializers.ValidationError("must be a JSON list of strings")
        return parsed

    def validate(self, attrs: dict) -> dict:
        if not attrs.get("files") and not attrs.get("bundle"):
            raise serializers.ValidationError(
                "send the task's files (field 'files') or a .zip (field 'bundle')"
            )
        if attrs.get("files") and attrs.get("bundle"):
            raise serializers.ValidationError("send either 'files' or 'bundle', not both")
        if "paths" in attrs and len(attrs["paths"]) != len(attrs.get("files", [])):
            raise serializers.ValidationError({"paths": "needs exactly one path per file"})
        return attrs
