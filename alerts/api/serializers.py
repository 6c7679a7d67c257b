from __future__ import annotations

from rest_framework import serializers

from alerts.choices import AlertEvent, ChannelKind
from alerts.models import Alert, Channel, Delivery, ErrorRateRule


class ChannelSerializer(serializers.ModelSerializer):
    """A channel; its webhook secret is shown once, when it is created or rotated."""

    app = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    kind = serializers.ChoiceField(choices=ChannelKind.choices)
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=AlertEvent.choices), required=False, default=list
    )
    emails = serializers.ListField(
        child=serializers.CharField(max_length=254), required=False, default=list, max_length=20
    )
    has_secret = serializers.SerializerMethodField()

    class Meta:
        model = Channel
        fields = [
            "id",
            "app",
            "name",
            "kind",
            "url",
            "emails",
            "events",
            "enabled",
            "has_secret",
            "created_at",
        ]
        read_only_fields = ["id", "app", "has_secret", "created_at"]
        extra_kwargs = {"url": {"required": False}, "enabled": {"required": False}}

    def get_has_secret(self, channel: Channel) -> bool:
        return bool(channel.secret)


class ChannelWriteSerializer(ChannelSerializer):
    app_slug = serializers.SlugField(
        write_only=True, required=False, help_text="App slug (on create)."
    )
    secret = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        max_length=128,
        help_text="Webhook secret (16+ characters); empty: generate one.",
    )

    class Meta(ChannelSerializer.Meta):
        fields = [*ChannelSerializer.Meta.fields, "app_slug", "secret"]


class ErrorRateRuleSerializer(serializers.ModelSerializer):
    app = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    task = serializers.CharField(help_text="Task name (or id) in the app.")
    app_slug = serializers.SlugField(write_only=True, required=False)

    class Meta:
        model = ErrorRateRule
        fields = [
            "id",
            "app",
            "app_slug",
            "task",
            "threshold",
            "window_s",
            "min_runs",
            "firing",
            "last_rate",
            "last_runs",
            "last_checked_at",
        ]
        read_only_fields = ["id", "app", "firing", "last_rate", "last_runs", "last_checked_at"]

    def to_representation(self, rule):
        data = super().to_representation(rule)
        data["task"] = rule.task.name
        return data


class DeliverySerializer(serializers.ModelSerializer):
    channel = serializers.CharField(source="channel.name")

    class Meta:
        model = Delivery
        fields = [
            "id",
            "channel",
            "state",
            "attempts",
            "next_attempt_at",
            "response_status",
            "last_error",
            "delivered_at",
        ]


class AlertSerializer(serializers.ModelSerializer):
    app = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    deliveries = DeliverySerializer(many=True, read_only=True)

    class Meta:
        model = Alert
        fields = [
            "id",
            "app",
            "event",
            "subject",
            "text",
            "payload",
            "release",
            "task",
            "created_at",
            "deliveries",
        ]
