from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response

from accounts.api.permissions import require_role
from accounts.choices import Role
from accounts.models import App
from accounts.permissions import visible_apps
from devices.models import Device
from releases import compare, monitoring, services, timeline
from releases.api.filters import DeploymentFilter, ReleaseDeploymentFilter, ReleaseFilter
from releases.api.serializers import (
    DeploymentEventSerializer,
    DeploymentSerializer,
    PinOutSerializer,
    PinSerializer,
    PreviewResultSerializer,
    PreviewSerializer,
    ReasonSerializer,
    ReleaseSerializer,
    RollbackSerializer,
)
from releases.models import Deployment, Pin, Release
from walle_web.filters import ListFiltersOnly
from walle_web.params import ParamError
from walle_web.timerange import RangeError, TimeRange, parse_range


def _conflict(exc: services.ReleaseError) -> Response:
    return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)


class ReleaseViewSet(
    ListFiltersOnly,
    mixins.CreateModelMixin,
    mixins.RetrieveModelMixin,
    mixins.ListModelMixin,
    viewsets.GenericViewSet,
):
    """Releases of task versions to devices; `?app=slug`, `?task=name`, `?state=` filter the list.

    Actions in the wrong state answer 409 with the reason.
    """

    serializer_class = ReleaseSerializer
    filterset_class = ReleaseFilter

    def get_queryset(self):
        return Release.objects.filter(app__in=visible_apps(self.request.user)).select_related(
            "app", "task", "version"
        )

    def perform_create(self, serializer):
        data = serializer.validated_data
        version = data["version"]
        require_role(self.request.user, version.task.app, Role.OPERATOR)
        try:
            serializer.instance = services.create_release(
                version,
                target=data.get("target"),
                stages=data.get("stages"),
                delivery=data.get("delivery"),
                on_error=data.get("on_error") or "pause",
                scheduled_at=data.get("scheduled_at"),
                name=data.get("name", ""),
                salt=data.get("salt", ""),
                by=self.request.user,
            )
        except services.ReleaseError as exc:
            raise ValidationError({"release": [str(exc)]}) from None

    def _operate(self, request, verb, **kwargs):
        release = self.get_object()
        require_role(request.user, release.app, Role.OPERATOR)
        try:
            result = verb(release, by=request.user, **kwargs)
        except services.ReleaseError as exc:
            return _conflict(exc)
        return Response(ReleaseSerializer(result, context={"request": request}).data)

    @extend_schema(request=None, responses={200: ReleaseSerializer, 409: None})
    @action(detail=True, methods=["post"])
    def start(self, request, pk=None):
        """Start a draft release now (or at its `scheduled_at`): the first stage's devices get the doorbell."""
        release = self.get_object()
        return self._operate(request, services.start_release, at=release.scheduled_at)

    @extend_schema(request=ReasonSerializer, responses={200: ReleaseSerializer, 409: None})
    @action(detail=True, methods=["post"])
    def pause(self, request, pk=None):
        """Stop admitting and ringing devices; those in flight finish."""
        body = ReasonSerializer(data=request.data, context={"request": request})
        body.is_valid(raise_exception=True)
        return self._operate(request, services.pause_release, reason=body.validated_data["reason"])

    @extend_schema(request=None, responses={200: ReleaseSerializer, 409: None})
    @action(detail=True, methods=["post"])
    def resume(self, request, pk=None):
        """Continue a paused release."""
        return self._operate(request, services.resume_release)

    @extend_schema(request=None, responses={200: ReleaseSerializer, 409: None})
    @action(detail=True, methods=["post"])
    def advance(self, request, pk=None):
        """Move to the next stage now, whatever the gates say."""
        return self._operate(request, services.advance_release)

    @extend_schema(request=ReasonSerializer, responses={200: ReleaseSerializer, 409: None})
    @action(detail=True, methods=["post"])
    def abort(self, request, pk=None):
        """Stop for good: no new notices; deployments in flight finish."""
        body = ReasonSerializer(data=request.data, context={"request": request})
        body.is_valid(raise_exception=True)
        return self._operate(request, services.abort_release, reason=body.validated_data["reason"])

    @extend_schema(request=RollbackSerializer, responses={201: ReleaseSerializer, 409: None})
    @action(detail=True, methods=["post"])
    def rollback(self, request, pk=None):
        """Release the previous good version (or `version`) instead; answers the new release."""
        body = RollbackSerializer(data=request.data, context={"request": request})
        body.is_valid(raise_exception=True)
        data = body.validated_data
        response = self._operate(
            request,
            services.rollback_release,
            to_version=data.get("version"),
            reason=data["reason"],
            skip_stages=data["skip_stages"],
        )
        if response.status_code == 200:
            response.status_code = status.HTTP_201_CREATED
        return response

    @extend_schema(request=PreviewSerializer, responses={200: PreviewResultSerializer, 404: None})
    @action(detail=False, methods=["post"])
    def preview(self, request):
        """How many enrolled devices a target reaches now, in total and per stage."""
        body = PreviewSerializer(data=request.data, context={"request": request})
        body.is_valid(raise_exception=True)
        data = body.validated_data
        app = (
            data["version"].task.app
            if data.get("version")
            else App.objects.filter(slug=data["app"]).first()
        )
        if app is None or not visible_apps(request.user).filter(pk=app.pk).exists():
            raise NotFound("no such app")
        try:
            return Response(
                services.preview(
                    app.pk, data.get("target") or {}, data.get("stages"), data.get("salt", "")
                )
            )
        except services.ReleaseError as exc:
            raise ValidationError({"release": [str(exc)]}) from None

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "sections",
                str,
                description="comma-separated subset of "
                + ", ".join(monitoring.SECTIONS)
                + " (default: all)",
            )
        ],
        responses={200: dict, 400: None},
    )
    @action(detail=True, methods=["get"])
    def monitoring(self, request, pk=None):
        """Counts per stage, per-minute transitions, top failure reasons, run metrics new vs control.

        `?sections=stages,failure_reasons` computes only those (the counts always come).
        """
        try:
            sections = monitoring.parse_sections(request.query_params.get("sections"))
        except ParamError as exc:
            raise ValidationError({exc.param: [str(exc)]}) from None
        return Response(monitoring.release_monitoring(self.get_object(), sections))

    def _range(self, request, release: Release) -> TimeRange:
        try:
            return parse_range(
                request.query_params,
                default_since=release.started_at or release.created_at,
                default_until=release.finished_at,
            )
        except RangeError as exc:
            raise ValidationError({exc.param: [str(exc)]}) from None

    @extend_schema(responses={200: dict})
    @action(detail=True, methods=["get"])
    def timeline(self, request, pk=None):
        """Deployments by state over time and each stage's success share and error rate, rebuilt
        from the history; `?since=&until=` (ISO, Unix seconds or `15m`/`1h` back) and `?step=`."""
        release = self.get_object()
        return Response(timeline.release_timeline(release, self._range(request, release)))

    @extend_schema(responses={200: dict})
    @action(detail=True, methods=["get"])
    def compare(self, request, pk=None):
        """New version vs control over one window: sample sizes, error rate and latency with
        significance verdicts, and their series; `?since=&until=&step=` as for the timeline."""
        release = self.get_object()
        return Response(compare.new_vs_control(release, self._range(request, release)))

    @extend_schema(
        responses=DeploymentSerializer(many=True),
        parameters=[
            OpenApiParameter(
                "state",
                str,
                description="One deployment state or several, comma separated (e.g. failed,timed_out).",
            ),
            OpenApiParameter("stage", int, description="Stage, from 1."),
            OpenApiParameter("device", str, description="Device id."),
        ],
        filters=False,
    )
    @action(detail=True, methods=["get"])
    def deployments(self, request, pk=None):
        """Per-device deployments of this release; `?state=` (one or several, comma separated),
        `?stage=` (1-based) and `?device=` filter."""
        release = self.get_object()
        filters = ReleaseDeploymentFilter(
            request.query_params,
            queryset=release.deployments.select_related("device").order_by("id"),
        )
        if not filters.is_valid():
            raise ValidationError(filters.errors)
        page = self.paginate_queryset(filters.qs)
        return self.get_paginated_response(DeploymentSerializer(page, many=True).data)


class DeploymentViewSet(
    ListFiltersOnly, mixins.RetrieveModelMixin, mixins.ListModelMixin, viewsets.GenericViewSet
):
    """Deployments (device x release); `?release=`, `?device=uid`, `?state=` filter."""

    serializer_class = DeploymentSerializer
    filterset_class = DeploymentFilter

    def get_queryset(self):
        return Deployment.objects.filter(
            release__app__in=visible_apps(self.request.user)
        ).select_related("device")

    # A plain list, as it answers: without pagination_class=None the schema described a page.
    @extend_schema(responses=DeploymentEventSerializer(many=True))
    @action(detail=True, methods=["get"], pagination_class=None)
    def history(self, request, pk=None):
        """The append-only transitions of one deployment."""
        return Response(DeploymentEventSerializer(self.get_object().events.all(), many=True).data)


class PinViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """Devices held at a version of a task regardless of releases. POST pins, DELETE ?device=&task= unpins."""

    serializer_class = PinSerializer
    pagination_class = None

    def get_queryset(self):
        return Pin.objects.filter(device__app__in=visible_apps(self.request.user)).select_related(
            "device", "version", "task"
        )

    @extend_schema(responses=PinOutSerializer(many=True))
    def list(self, request):
        pins = self.get_queryset()
        return Response(
            [
                {
                    "device": p.device.uid,
                    "task": p.task.name,
                    "version": p.version.number,
                    "version_id": p.version_id,
                    "reason": p.reason,
                }
                for p in pins
            ]
        )

    @extend_schema(request=PinSerializer, responses={201: PinOutSerializer, 404: None})
    def create(self, request):
        body = PinSerializer(data=request.data, context={"request": request})
        body.is_valid(raise_exception=True)
        device = Device.objects.filter(
            uid=body.validated_data["device"], app__in=visible_apps(request.user)
        ).first()
        if device is None:
            raise NotFound("no such device")
        require_role(request.user, device.app, Role.OPERATOR)
        try:
            pin = services.pin_device(
                device,
                body.validated_data["version"],
                reason=body.validated_data["reason"],
                by=request.user,
            )
        except services.ReleaseError as exc:
            raise ValidationError({"version": [str(exc)]}) from None
        return Response(
            {"device": device.uid, "task": pin.task.name, "version": pin.version.number},
            status=status.HTTP_201_CREATED,
        )

    @extend_schema(
        request=None,
        responses={204: None, 404: None},
        parameters=[
            OpenApiParameter("device", str, required=True, description="Device id."),
            OpenApiParameter("task", str, required=True, description="Task name."),
        ],
    )
    @action(detail=False, methods=["delete"], url_path="remove")
    def remove(self, request):
        """Unpin `?device=uid&task=name`."""
        pin = (
            self.get_queryset()
            .filter(
                device__uid=request.query_params.get("device"),
                task__name=request.query_params.get("task"),
            )
            .first()
        )
        if pin is None:
            raise NotFound("no such pin")
        require_role(request.user, pin.device.app, Role.OPERATOR)
        services.unpin_device(pin.device, pin.task, by=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)
