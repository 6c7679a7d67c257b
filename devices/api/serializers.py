from __future__ import annotations

from rest_framework import serializers

from devices.models import Device, Result
from walle_device.protocol import ATTR_MAX_LEN, INT32_MAX, MAX_TAGS, MAX_UPLOAD_ITEMS


class EnrollSerializer(serializers.Serializer):
    enrollment_key = serializers.CharField(max_length=200)
    attrs = serializers.DictField(
        required=False,
        default=dict,
        help_text="app_version, os, os_version, model, region, engine_version (strings of at "
        f"most {ATTR_MAX_LEN} characters), tags (at most {MAX_TAGS} strings).",
    )


class TunnelItemSerializer(serializers.Serializer):
    key = serializers.CharField(max_length=128, help_text="Idempotency key, unique per device.")
    task = serializers.CharField(max_length=100)
    version = serializers.IntegerField(min_value=0, max_value=INT32_MAX)
    payload = serializers.JSONField()


class TunnelBatchSerializer(serializers.Serializer):
    items = TunnelItemSerializer(many=True, max_length=MAX_UPLOAD_ITEMS)


class TunnelAckSerializer(serializers.Serializer):
    keys = serializers.ListField(
        child=serializers.CharField(), help_text="Keys stored now or before: drop them locally."
    )


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
            "retired_at",
        ]


class ResultSerializer(serializers.ModelSerializer):
    device = serializers.SlugRelatedField(slug_field="uid", read_only=True)

    class Meta:
        model = Result
        fields = ["id", "device", "task", "version", "key", "payload", "received_at"]
