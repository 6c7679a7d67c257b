from __future__ import annotations

from pathlib import Path
from typing import IO

from django.db.models import Prefetch
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response

from accounts.api.permissions import require_role
from accounts.choices import Role
from accounts.permissions import visible_apps
from tasks import services
from tasks.api.filters import TaskFilter, TaskVersionFilter
from tasks.api.serializers import TaskSerializer, TaskVersionSerializer, VersionUploadSerializer
from tasks.bundles import BundleError
from tasks.models import Task, TaskVersion
from walle_web.filters import ListFiltersOnly
from walle_web.rest import StrictJSONParser


def _on_disk(upload) -> Path | IO[bytes]:
    """An uploaded file as a path when it streamed to a temporary file (it always does)."""
    path = getattr(upload, "temporary_file_path", None)
    return Path(path()) if path else upload


class TaskViewSet(
    ListFiltersOnly,
    mixins.CreateModelMixin,
    mixins.RetrieveModelMixin,
    mixins.ListModelMixin,
    viewsets.GenericViewSet,
):
    """Tasks of the apps the user belongs to; `?app=slug` narrows to one app."""

    serializer_class = TaskSerializer
    parser_classes = [StrictJSONParser, MultiPartParser, FormParser]
    filterset_class = TaskFilter

    def get_queryset(self):
        qs = Task.objects.filter(app__in=visible_apps(self.request.user)).select_related("app")
        return qs.prefetch_related(
            Prefetch("versions", queryset=TaskVersion.objects.only("id", "task_id", "number"))
        )

    def perform_create(self, serializer):
        data = serializer.validated_data
        require_role(self.request.user, data["app"], Role.OPERATOR)
        serializer.instance = services.create_task(
            data["app"],
            name=data["name"],
            scene=data.get("scene", ""),
            description=data.get("description", ""),
            by=self.request.user,
        )

    @extend_schema(methods=["get"], responses=TaskVersionSerializer(many=True))
    @extend_schema(
        methods=["post"],
        request=VersionUploadSerializer,
        responses={201: TaskVersionSerializer, 503: None},
    )
    @action(detail=True, methods=["get", "post"], parser_classes=[MultiPartParser, FormParser])
    def versions(self, request, pk=None):
        """List versions, or upload a new one (multipart files + config, or a .zip bundle)."""
        task = self.get_object()
        if request.method == "GET":
            page = self.paginate_queryset(
                TaskVersion.objects.filter(task=task).select_related("task", "parent")
            )
            return self.get_paginated_response(TaskVersionSerializer(page, many=True).data)
        require_role(request.user, task.app, Role.OPERATOR)
        upload = VersionUploadSerializer(data=request.data, context={"request": request})
        upload.is_valid(raise_exception=True)
        data = upload.validated_data
        try:
            files = None
            if not data.get("bundle"):
                paths = data.get("paths") or [f.name for f in data["files"]]
                files = {}
                for path, f in zip(paths, data["files"], strict=True):
                    if path in files:
                        raise BundleError({"files": [f"{path!r} is uploaded twice"]})
                    files[path] = _on_disk(f)
            version = services.create_version(
                task,
                files=files,
                bundle=_on_disk(data["bundle"]) if data.get("bundle") else None,
                entry_point=data.get("entry_point") or "",
                config=data.get("config"),
                notes=data.get("notes") or "",
                by=request.user,
            )
        except BundleError as exc:
            raise ValidationError(exc.errors) from None
        return Response(TaskVersionSerializer(version).data, status=status.HTTP_201_CREATED)


class TaskVersionViewSet(
    ListFiltersOnly, mixins.RetrieveModelMixin, mixins.ListModelMixin, viewsets.GenericViewSet
):
    """Immutable task versions; `?task=<name or id>` and `?app=<slug>` narrow the list."""

    serializer_class = TaskVersionSerializer
    filterset_class = TaskVersionFilter

    def get_queryset(self):
        return TaskVersion.objects.filter(
            task__app__in=visible_apps(self.request.user)
        ).select_related("task", "parent")
