from __future__ import annotations

import csv
import io
import json
import re

from django.contrib.auth.models import AnonymousUser
from django.http import StreamingHttpResponse
from django.utils.http import content_disposition_header
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import authentication, exceptions, mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.api.permissions import require_role
from accounts.choices import Role
from accounts.permissions import visible_apps
from devices import services
from devices.api.filters import DeviceFilter, ResultFilter
from devices.api.serializers import (
    DeviceSerializer,
    EnrolledSerializer,
    EnrollSerializer,
    ResultSerializer,
    TunnelAckSerializer,
    TunnelBatchSerializer,
)
from devices.enroll import enrolled_body
from devices.models import Device, Result
from walle_device import protocol
from walle_web.filters import ListFiltersOnly
from walle_web.params import ParamError, whole_number
from walle_web.rest import (
    DeviceThrottle,
    EnrollAddressThrottle,
    EnrollKeyThrottle,
    check_failed_auth,
    record_failed_auth,
)


class EnrollView(APIView):
    """Enroll a device with an app enrollment key; answers its id and secret token once."""

    permission_classes = [AllowAny]
    authentication_classes: list = []
    throttle_classes = [EnrollAddressThrottle, EnrollKeyThrottle]

    @extend_schema(request=EnrollSerializer, responses={201: EnrolledSerializer, 403: None})
    def post(self, request):
        body = EnrollSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            device, token = services.enroll_device(
                body.validated_data["enrollment_key"], body.validated_data["attrs"]
            )
        except protocol.ProtocolError as exc:
            return Response({"attrs": [exc.message]}, status=status.HTTP_400_BAD_REQUEST)
        except services.EnrollmentError as exc:
            return Response({"enrollment_key": [str(exc)]}, status=status.HTTP_403_FORBIDDEN)
        return Response(enrolled_body(device, token), status=status.HTTP_201_CREATED)


class DeviceViewSet(
    ListFiltersOnly, mixins.RetrieveModelMixin, mixins.ListModelMixin, viewsets.GenericViewSet
):
    """Enrolled devices; filters: ?app=slug, ?online=true|false, ?model=…, ?retired=true|false.

    App admins retire a device (POST …/retire/): its token stops working at once and its open
    sockets close on every server process; its history stays.
    """

    serializer_class = DeviceSerializer
    lookup_field = "uid"
    lookup_value_regex = r"[A-Za-z0-9_.\-]{1,40}"
    filterset_class = DeviceFilter

    def get_queryset(self):
        return Device.objects.filter(app__in=visible_apps(self.request.user)).select_related("app")

    @extend_schema(request=None, responses={200: DeviceSerializer})
    @action(detail=True, methods=["post"])
    def retire(self, request, uid=None):
        """Revoke the device's token (app admins); idempotent. The device keeps its history."""
        device = self.get_object()
        require_role(request.user, device.app, Role.ADMIN)
        device = services.retire_device(device, by=request.user)
        return Response(DeviceSerializer(device, context={"request": request}).data)


class ResultViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """Results tasks uploaded through the tunnel; filters: ?app=slug, ?task=name, ?device=, ?version=."""

    serializer_class = ResultSerializer
    filterset_class = ResultFilter

    def get_queryset(self):
        return Result.objects.filter(app__in=visible_apps(self.request.user)).select_related(
            "device"
        )


class DeviceTokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <device token>` for device HTTP endpoints (the tunnel batch)."""

    def authenticate(self, request):
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        check_failed_auth(request)
        device = services.authenticate_device(token.strip())
        if device is None:
            record_failed_auth(request)
            raise exceptions.AuthenticationFailed(
                "unknown or retired device token; enroll the device again"
            )
        return (AnonymousUser(), device)

    def authenticate_header(self, request):
        return "Bearer"


class DeviceTokenScheme(OpenApiAuthenticationExtension):
    target_class = DeviceTokenAuthentication
    name = "deviceToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "The device token from enrollment.",
        }


class TunnelBatchView(APIView):
    """Upload a batch of tunnel items over HTTP (the websocket `upload` message's twin).

    Answers the keys stored now or before; a duplicate key is acknowledged, never stored twice.
    """

    authentication_classes = [DeviceTokenAuthentication]
    permission_classes = [AllowAny]
    throttle_classes = [DeviceThrottle]

    @extend_schema(request=TunnelBatchSerializer, responses={200: TunnelAckSerializer})
    def post(self, request):
        device = request.auth
        if device is None:
            raise exceptions.NotAuthenticated(
                "send the device token as 'Authorization: Bearer <token>'"
            )
        items = request.data.get("items") if isinstance(request.data, dict) else None
        try:
            msg = protocol.validate(protocol.message("upload", id="http", items=items))
        except protocol.ProtocolError as exc:
            return Response({"items": [exc.message]}, status=status.HTTP_400_BAD_REQUEST)
        return Response({"keys": services.store_results(device, msg["items"])})


class ResultExportView(APIView):
    """Stream a task's results as JSON lines (`?as=jsonl`, default) or CSV (`?as=csv`);
    `?version=` and `?device=` (uid) narrow them."""

    @extend_schema(
        parameters=[
            OpenApiParameter("app", str, required=True, description="App slug."),
            OpenApiParameter("task", str, required=True, description="Task name."),
            OpenApiParameter("as", str, enum=["jsonl", "csv"], description="Format."),
        ],
        responses={
            (200, "application/x-ndjson"): OpenApiTypes.STR,
            (200, "text/csv"): OpenApiTypes.STR,
        },
    )
    def get(self, request):
        params = request.query_params
        task = params.get("task", "")
        app = visible_apps(request.user).filter(slug=params.get("app", "")[:64]).first()
        if app is None or not task or len(task) > 100:
            raise exceptions.ValidationError(
                {"detail": "give ?app=<slug>&task=<name> of an app you belong to"}
            )
        fmt = params.get("as", "jsonl")
        if fmt not in ("jsonl", "csv"):
            raise exceptions.ValidationError({"as": "jsonl or csv"})
        try:
            version = whole_number("version", params.get("version"), minimum=1)
        except ParamError as exc:
            raise exceptions.ValidationError({"version": "a version number, e.g. 3"}) from exc
        rows = Result.objects.filter(app=app, task=task).select_related("device").order_by("id")
        # The results page exports what it shows: one version and/or one device.
        if version is not None:
            rows = rows.filter(version=version)
        if device := params.get("device", "").strip():
            rows = rows.filter(device__uid=device)

        def jsonl():
            for r in rows.iterator(chunk_size=2000):
                yield (
                    json.dumps(
                        {
                            "key": r.key,
                            "device": r.device.uid,
                            "task": r.task,
                            "version": r.version,
                            "received_at": r.received_at.isoformat(),
                            "payload": r.payload,
                        }
                    )
                    + "\n"
                )

        def csv_rows():
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            writer.writerow(["key", "device", "task", "version", "received_at", "payload"])
            for r in rows.iterator(chunk_size=2000):
                writer.writerow(
                    [
                        r.key,
                        r.device.uid,
                        r.task,
                        r.version,
                        r.received_at.isoformat(),
                        json.dumps(r.payload),
                    ]
                )
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
            yield buffer.getvalue()

        content_type = "application/x-ndjson" if fmt == "jsonl" else "text/csv"
        response = StreamingHttpResponse(
            jsonl() if fmt == "jsonl" else csv_rows(), content_type=content_type
        )
        # The name is built from safe characters only: a task name is user input, and quotes
        # or line breaks in a header would break or inject into it.
        safe_task = re.sub(r"[^A-Za-z0-9_.-]", "_", task)
        response["Content-Disposition"] = content_disposition_header(
            True, f"{app.slug}-{safe_task}.{fmt}"
        )
        return response
