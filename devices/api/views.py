from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import visible_apps
from devices import services
from devices.api.serializers import (
    DeviceSerializer,
    EnrolledSerializer,
    EnrollSerializer,
    ResultSerializer,
)
from devices.models import Device, Result
from tasks.signing import public_key_b64


class EnrollView(APIView):
    """Enroll a device with an app enrollment key; answers its id and secret token once."""

    permission_classes = [AllowAny]
    authentication_classes: list = []

    @extend_schema(request=EnrollSerializer, responses={201: EnrolledSerializer})
    def post(self, request):
        body = EnrollSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            device, token = services.enroll_device(
                body.validated_data["enrollment_key"], body.validated_data["attrs"]
            )
        except services.EnrollmentError as exc:
            return Response({"enrollment_key": [str(exc)]}, status=status.HTTP_403_FORBIDDEN)
        data = {
            "device_id": device.uid,
            "token": token,
            "app": device.app.slug,
            "release_key": public_key_b64(),
        }
        return Response(data, status=status.HTTP_201_CREATED)


class DeviceViewSet(mixins.RetrieveModelMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """Enrolled devices; filters: ?app=slug, ?online=true|false, ?model=…"""

    serializer_class = DeviceSerializer
    lookup_field = "uid"

    def get_queryset(self):
        qs = Device.objects.filter(app__in=visible_apps(self.request.user)).select_related("app")
        params = self.request.query_params
        if app := params.get("app"):
            qs = qs.filter(app__slug=app)
        if online := params.get("online"):
            qs = qs.filter(online=online.lower() in ("1", "true", "yes"))
        if model := params.get("model"):
            qs = qs.filter(model=model)
        return qs


class ResultViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """Results tasks uploaded through the tunnel; filters: ?app=slug, ?task=name."""

    serializer_class = ResultSerializer

    def get_queryset(self):
        qs = Result.objects.filter(app__in=visible_apps(self.request.user)).select_related("device")
        params = self.request.query_params
        if app := params.get("app"):
            qs = qs.filter(app__slug=app)
        if task := params.get("task"):
            qs = qs.filter(task=task)
        return qs
