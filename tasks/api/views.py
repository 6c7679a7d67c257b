from __future__ import annotations

from django.db.models import Prefetch
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response

from accounts.api.permissions import require_role
from accounts.choices import Role
from accounts.permissions import visible_apps
from tasks import services
from tasks.api.serializers import TaskSerializer, TaskVersionSerializer, VersionUploadSerializer
from tasks.bundles import BundleError, read_zip
from tasks.models import Task, TaskVersion


class TaskViewSet(
    mixins.CreateModelMixin,
    mixins.RetrieveModelMixin,
    mixins.ListModelMixin,
    viewsets.GenericViewSet,
):
    """Tasks of the apps the user belongs to; `?app=slug` narrows to one app."""

    serializer_class = TaskSerializer
    parser_classes = [JSONParser, MultiPartParser, FormParser]

    def get_queryset(self):
        qs = Task.objects.filter(app__in=visible_apps(self.request.user)).select_related("app")
        qs = qs.prefetch_related(
            Prefetch("versions", queryset=TaskVersion.objects.only("id", "task_id", "number"))
        )
        if app := self.request.query_params.get("app"):
            qs = qs.filter(app__slug=app)
        return qs

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
        methods=["post"], request=VersionUploadSerializer, responses={201: TaskVersionSerializer}
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
        upload = VersionUploadSerializer(data=request.data)
        upload.is_valid(raise_exception=True)
        data = upload.validated_data
        try:
            if data.get("bundle"):
                files, meta = read_zip(data["bundle"].read())
            else:
                paths = data.get("paths") or [f.name for f in data["files"]]
                files = {}
                for path, f in zip(paths, data["files"], strict=True):
                    if path in files:
                        raise BundleError({"files": [f"{path!r} is uploaded twice"]})
                    files[path] = f.read()
                meta = {}
            config = data.get("config")
            if config is None:
                config = meta.get("config", {})
            version = services.create_version(
                task,
                files=files,
                entry_point=data.get("entry_point")
                or meta.get("entry_point")
                or ("main.py" if "main.py" in files else ""),
                config=config,
                notes=data.get("notes") or str(meta.get("notes", "")),
                by=request.user,
            )
        except BundleError as exc:
            raise ValidationError(exc.errors) from None
        return Response(TaskVersionSerializer(version).data, status=status.HTTP_201_CREATED)


class TaskVersionViewSet(mixins.RetrieveModelMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """Immutable task versions; `?task=<id>` narrows to one task."""

    serializer_class = TaskVersionSerializer

    def get_queryset(self):
        qs = TaskVersion.objects.filter(
            task__app__in=visible_apps(self.request.user)
        ).select_related("task", "parent")
        if task := self.request.query_params.get("task"):
            qs = qs.filter(task_id=task)
        return qs
