from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from accounts.api.permissions import require_role
from accounts.choices import Role
from accounts.permissions import visible_apps
from releases import services
from releases.api.serializers import (
    DeploymentEventSerializer,
    DeploymentSerializer,
    ReleaseSerializer,
)
from releases.models import Deployment, Release


class ReleaseViewSet(
    mixins.CreateModelMixin,
    mixins.RetrieveModelMixin,
    mixins.ListModelMixin,
    viewsets.GenericViewSet,
):
    """Releases of task versions to devices; `?app=slug`, `?task=name`, `?state=` filter the list."""

    serializer_class = ReleaseSerializer

    def get_queryset(self):
        qs = Release.objects.filter(app__in=visible_apps(self.request.user)).select_related(
            "app", "task", "version"
        )
        params = self.request.query_params
        if app := params.get("app"):
            qs = qs.filter(app__slug=app)
        if task := params.get("task"):
            qs = qs.filter(task__name=task)
        if state := params.get("state"):
            qs = qs.filter(state=state)
        return qs

    def perform_create(self, serializer):
        data = serializer.validated_data
        version = data["version"]
        require_role(self.request.user, version.task.app, Role.OPERATOR)
        try:
            serializer.instance = services.create_release(
                version,
                target=data.get("target"),
                stages=data.get("stages"),
                name=data.get("name", ""),
                salt=data.get("salt", ""),
                by=self.request.user,
            )
        except services.ReleaseError as exc:
            raise ValidationError({"release": [str(exc)]}) from None

    def _act(self, request, verb):
        release = self.get_object()
        require_role(request.user, release.app, Role.OPERATOR)
        try:
            release = verb(release, by=request.user)
        except services.ReleaseError as exc:
            return Response({"detail": str(exc)}, status=409)
        return Response(ReleaseSerializer(release, context={"request": request}).data)

    @extend_schema(request=None, responses=ReleaseSerializer)
    @action(detail=True, methods=["post"])
    def start(self, request, pk=None):
        """Start a draft release: devices in the first stage get the doorbell."""
        return self._act(request, services.start_release)

    @extend_schema(responses=DeploymentSerializer(many=True))
    @action(detail=True, methods=["get"])
    def deployments(self, request, pk=None):
        """Per-device deployments of this release; `?state=` filters."""
        release = self.get_object()
        qs = release.deployments.select_related("device").order_by("id")
        if state := request.query_params.get("state"):
            qs = qs.filter(state=state)
        page = self.paginate_queryset(qs)
        return self.get_paginated_response(DeploymentSerializer(page, many=True).data)


class DeploymentViewSet(mixins.RetrieveModelMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """Deployments (device x release); `?release=`, `?device=uid`, `?state=` filter."""

    serializer_class = DeploymentSerializer

    def get_queryset(self):
        qs = Deployment.objects.filter(
            release__app__in=visible_apps(self.request.user)
        ).select_related("device")
        params = self.request.query_params
        if release := params.get("release"):
            qs = qs.filter(release_id=release)
        if device := params.get("device"):
            qs = qs.filter(device__uid=device)
        if state := params.get("state"):
            qs = qs.filter(state=state)
        return qs

    @extend_schema(responses=DeploymentEventSerializer(many=True))
    @action(detail=True, methods=["get"])
    def history(self, request, pk=None):
        """The append-only transitions of one deployment."""
        return Response(DeploymentEventSerializer(self.get_object().events.all(), many=True).data)
