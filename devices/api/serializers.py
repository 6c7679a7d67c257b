from __future__ import annotations

from rest_framework import serializers

from devices.models import Device, Result


class EnrollSerializer(serializers.Serializer):
    enrollment_key = serializers.CharField(max_length=200)
    attrs = serializers.DictField(required=False, default=dict)


class EnrolledSerializer(serializers.Serializer):
    device_id = serializers.CharField()
    token = serializers.CharField()
    app = serializers.CharField()
    release_key = serializers.CharField(
        help_text="Ed25519 public key (base64) that signs manifests."
    )


class DeviceSerializer(serializers.ModelSerializer):
    app = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = Device
        fields = [
            "id",
            "uid",
            "app",
            "app_version",
            "os",
            "os_version",
            "model",
            "region",
            "tags",
            "engine_version",
            "current",
            "online",
            "last_seen",
            "enrolled_at",
        ]


class ResultSerializer(serializers.ModelSerializer):
    device = serializers.SlugRelatedField(slug_field="uid", read_only=True)

    class Meta:
        model = Result
        fields = ["id", "device", "task", "version", "key", "payload", "received_at"]
