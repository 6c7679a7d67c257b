from __future__ import annotations

import json

from rest_framework import serializers

from accounts.models import App
from tasks.models import Task, TaskVersion


class TaskSerializer(serializers.ModelSerializer):
    app = serializers.SlugRelatedField(slug_field="slug", queryset=App.objects.all())
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
    parent = serializers.SlugRelatedField(slug_field="number", read_only=True)
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
    entry_point = serializers.CharField(required=False, allow_blank=True, default="")
    config = serializers.CharField(required=False, default="", help_text="JSON object.")
    notes = serializers.CharField(required=False, allow_blank=True, default="")

    def validate_config(self, value: str) -> dict | None:
        if not value:
            return None
        try:
            parsed = json.loads(value)
        except ValueError as exc:
            raise serializers.ValidationError(f"not valid JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise serializers.ValidationError("must be a JSON object")
        return parsed

    def validate_paths(self, value: str) -> list[str]:
        try:
            parsed = json.loads(value)
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
