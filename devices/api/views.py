from __future__ import annotations

import csv
import io
import json

from django.contrib.auth.models import AnonymousUser
from django.http import StreamingHttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework import authentication, exceptions, mixins, status, viewsets
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
from devices.enroll import enrolled_body
from devices.models import Device, Result
from walle_device import protocol


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
        return Response(enrolled_body(device, token), status=status.HTTP_201_CREATED)


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


class DeviceTokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <device token>` for device HTTP endpoints (the tunnel batch)."""

    def authenticate(self, request):
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        device = services.authenticate_device(token.strip())
        if device is None:
            raise exceptions.AuthenticationFailed("unknown device token; enroll the device again")
        return (AnonymousUser(), device)

    def authenticate_header(self, request):
        return "Bearer"


class TunnelBatchView(APIView):
    """Upload a batch of tunnel items over HTTP (the websocket `upload` message's twin).

    Answers the keys stored now or before; a duplicate key is acknowledged, never stored twice.
    """

    authentication_classes = [DeviceTokenAuthentication]
    permission_classes = [AllowAny]

    @extend_schema(request=dict, responses={200: dict})
    def post(self, request):
        device = request.auth
        if device is None:
            raise exceptions.NotAuthenticated(
                "send the device token as 'Authorization: Bearer <token>'"
            )
        try:
            msg = protocol.validate(
                protocol.message("upload", id="http", items=request.data.get("items"))
            )
        except (protocol.ProtocolError, AttributeError) as exc:
            message = (
                exc.message
                if isinstance(exc, protocol.ProtocolError)
                else "body must be {'items': [...]}"
            )
            return Response({"items": [message]}, status=status.HTTP_400_BAD_REQUEST)
        if len(msg["items"]) > 1000:
            return Response(
                {"items": ["at most 1000 items per batch"]}, status=status.HTTP_400_BAD_REQUEST
            )
        return Response({"keys": services.store_results(device, msg["items"])})


class ResultExportView(APIView):
    """Stream a task's results as JSON lines (`?as=jsonl`, default) or CSV (`?as=csv`)."""

    @extend_schema(responses={200: str})
    def get(self, request):
        params = request.query_params
        app = visible_apps(request.user).filter(slug=params.get("app", "")).first()
        if app is None or not params.get("task"):
            raise exceptions.ValidationError(
                {"detail": "give ?app=<slug>&task=<name> of an app you belong to"}
            )
        fmt = params.get("as", "jsonl")
        if fmt not in ("jsonl", "csv"):
            raise exceptions.ValidationError({"as": "jsonl or csv"})
        rows = (
            Result.objects.filter(app=app, task=params["task"])
            .select_related("device")
            .order_by("id")
        )

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
        response["Content-Disposition"] = (
            f'attachment; filename="{app.slug}-{params["task"]}.{fmt}"'
        )
        return response
