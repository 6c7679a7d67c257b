from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response

from accounts import services
from accounts.api.permissions import require_role
from accounts.api.serializers import (
    AppSerializer,
    AuditEntrySerializer,
    EnrollmentKeyCreateSerializer,
)
from accounts.choices import Role
from accounts.permissions import visible_apps


class AppViewSet(
    mixins.CreateModelMixin,
    mixins.RetrieveModelMixin,
    mixins.ListModelMixin,
    viewsets.GenericViewSet,
):
    """Apps (tenants) the user is a member of. Creating one needs a staff account."""

    serializer_class = AppSerializer
    lookup_field = "slug"

    def get_queryset(self):
        return visible_apps(self.request.user).order_by("slug")

    def perform_create(self, serializer):
        if not self.request.user.is_staff:
            raise PermissionDenied("only staff accounts create apps; ask a platform administrator")
        data = serializer.validated_data
        serializer.instance = services.create_app(
            slug=data["slug"], name=data.get("name", ""), owner=self.request.user
        )

    @extend_schema(request=EnrollmentKeyCreateSerializer, responses={201: dict})
    @action(detail=True, methods=["post"], url_path="enrollment-keys")
    def enrollment_keys(self, request, slug=None):
        """Create an enrollment key; the key itself is in this response only."""
        app = self.get_object()
        require_role(request.user, app, Role.ADMIN)
        body = EnrollmentKeyCreateSerializer(data=request.data, context={"request": request})
        body.is_valid(raise_exception=True)
        key, plain = services.create_enrollment_key(
            app, label=body.validated_data["label"], by=request.user
        )
        return Response(
            {"id": key.pk, "label": key.label, "key": plain}, status=status.HTTP_201_CREATED
        )

    @extend_schema(responses=AuditEntrySerializer(many=True))
    @action(detail=True, methods=["get"])
    def audit(self, request, slug=None):
        """Who did what in this app, newest first."""
        app = self.get_object()
        page = self.paginate_queryset(app.audit_entries.select_related("user"))
        return self.get_paginated_response(AuditEntrySerializer(page, many=True).data)
