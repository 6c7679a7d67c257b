"""Alert channels and error-rate rules (operators configure, viewers read), and the alerts."""

from __future__ import annotations

from django.db import transaction
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from accounts.api.permissions import require_role
from accounts.choices import Role
from accounts.permissions import visible_apps
from alerts import services
from alerts.api.serializers import (
    AlertSerializer,
    ChannelSerializer,
    ChannelWriteSerializer,
    ErrorRateRuleSerializer,
)
from alerts.choices import AlertEvent
from alerts.models import Alert, Channel, ErrorRateRule
from tasks.models import Task


def _app_for_create(request, data):
    slug = data.get("app_slug") or request.query_params.get("app", "")
    app = visible_apps(request.user).filter(slug=slug).first()
    if app is None:
        raise ValidationError({"app_slug": ["give the slug of an app you belong to"]})
    require_role(request.user, app, Role.OPERATOR)
    return app


def _config_error(exc: services.AlertConfigError) -> ValidationError:
    return ValidationError({k: [v] for k, v in exc.errors.items()})


class _AppScoped:
    def scoped(self, qs):
        qs = qs.filter(app__in=visible_apps(self.request.user)).select_related("app")
        if app := self.request.query_params.get("app"):
            qs = qs.filter(app__slug=app)
        return qs


class _ConfiguredThroughServices(_AppScoped):
    """Writes go through the alerts services (validation, audit); `_save` and `_delete`."""

    def create(self, request):
        return Response(self._save(request), status=status.HTTP_201_CREATED)

    def update(self, request, pk=None, partial=False):
        return Response(self._save(request, self.get_object(), partial=partial))

    def partial_update(self, request, pk=None):
        return self.update(request, pk, partial=True)

    def destroy(self, request, pk=None):
        item = self.get_object()
        require_role(request.user, item.app, Role.OPERATOR)
        self._delete(item, by=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ChannelViewSet(_ConfiguredThroughServices, viewsets.ModelViewSet):
    """Notification channels of an app (`?app=slug`): webhooks and email. Operators configure;
    the webhook secret is answered once, on create and on `rotate_secret`."""

    def get_queryset(self):
        return self.scoped(Channel.objects.all())

    def get_serializer_class(self):
        return (
            ChannelWriteSerializer
            if self.action in ("create", "update", "partial_update")
            else ChannelSerializer
        )

    def _save(self, request, channel=None, partial=False):
        body = ChannelWriteSerializer(channel, data=request.data, partial=partial)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        app = channel.app if channel else _app_for_create(request, data)
        if channel:
            require_role(request.user, app, Role.OPERATOR)

        def value(name, default):
            return data.get(name, getattr(channel, name) if channel else default)

        try:
            saved, secret = services.save_channel(
                app,
                channel=channel,
                name=value("name", ""),
                kind=value("kind", ""),
                url=value("url", ""),
                emails=value("emails", []),
                events=value("events", []),
                enabled=value("enabled", True),
                secret=data.get("secret", ""),
                by=request.user,
            )
        except services.AlertConfigError as exc:
            raise _config_error(exc) from None
        out = ChannelSerializer(saved).data
        if secret:
            out["secret"] = secret
        return out

    _delete = staticmethod(services.delete_channel)

    @extend_schema(request=None, responses={201: AlertSerializer})
    @action(detail=True, methods=["post"])
    def test(self, request, pk=None):
        """Send a test alert to this channel only (delivered by the worker, like any alert)."""
        channel = self.get_object()
        require_role(request.user, channel.app, Role.OPERATOR)
        with transaction.atomic():
            alert = services.raise_alert(
                channel.app,
                AlertEvent.TEST,
                f"Test alert for channel {channel.name}",
                f"{request.user.get_username()} sent this to check the channel.",
                channel=channel,
                link=f"/apps/{channel.app.slug}/alerts/",
            )
        return Response(AlertSerializer(alert).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: dict})
    @action(detail=True, methods=["post"], url_path="rotate-secret")
    def rotate_secret(self, request, pk=None):
        """Replace the webhook secret; answers the new one once."""
        channel = self.get_object()
        require_role(request.user, channel.app, Role.OPERATOR)
        try:
            _, secret = services.save_channel(
                channel.app,
                channel=channel,
                name=channel.name,
                kind=channel.kind,
                url=channel.url,
                emails=channel.emails,
                events=channel.events,
                enabled=channel.enabled,
                secret=services.new_secret(),
                by=request.user,
            )
        except services.AlertConfigError as exc:
            raise _config_error(exc) from None
        return Response({"id": channel.pk, "secret": secret})


class ErrorRateRuleViewSet(_ConfiguredThroughServices, viewsets.ModelViewSet):
    """Per task: alert when its fleet-wide run error rate over a window is above a threshold."""

    serializer_class = ErrorRateRuleSerializer

    def get_queryset(self):
        return self.scoped(ErrorRateRule.objects.select_related("task"))

    def _save(self, request, rule=None, partial=False):
        body = ErrorRateRuleSerializer(rule, data=request.data, partial=partial)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        app = rule.app if rule else _app_for_create(request, data)
        require_role(request.user, app, Role.OPERATOR)
        task = rule.task if rule else None
        if "task" in data:
            name = data["task"]
            tasks = Task.objects.filter(app=app)
            task = tasks.filter(name=name).first() or (
                tasks.filter(pk=int(name)).first() if name.isdigit() else None
            )
            if task is None:
                raise ValidationError({"task": [f"no task {name!r} in app {app.slug!r}"]})
        try:
            saved = services.save_rule(
                app,
                task=task,
                threshold=data.get("threshold", rule.threshold if rule else None),
                window_s=data.get("window_s", rule.window_s if rule else 600),
                min_runs=data.get("min_runs", rule.min_runs if rule else 20),
                by=request.user,
            )
        except services.AlertConfigError as exc:
            raise _config_error(exc) from None
        return ErrorRateRuleSerializer(saved).data

    _delete = staticmethod(services.delete_rule)


class AlertViewSet(
    _AppScoped, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """Alerts raised in the apps you belong to, newest first, with their deliveries;
    `?app=slug`, `?event=` filter."""

    serializer_class = AlertSerializer

    def get_queryset(self):
        qs = self.scoped(Alert.objects.prefetch_related("deliveries__channel"))
        if event := self.request.query_params.get("event"):
            if event not in AlertEvent.values:
                raise ValidationError({"event": [f"one of {', '.join(AlertEvent.values)}"]})
            qs = qs.filter(event=event)
        return qs
