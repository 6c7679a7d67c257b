from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.routers import DefaultRouter

from accounts.api.views import AppViewSet
from alerts.api.views import AlertViewSet, ChannelViewSet, ErrorRateRuleViewSet
from devices.api import data as data_views
from devices.api.views import (
    DeviceViewSet,
    EnrollView,
    ResultExportView,
    ResultViewSet,
    TunnelBatchView,
)
from releases.api.views import DeploymentViewSet, PinViewSet, ReleaseViewSet
from tasks import views as content_views
from tasks.api.views import TaskVersionViewSet, TaskViewSet
from walle_web import metrics, views

router = DefaultRouter()
router.register("apps", AppViewSet, basename="app")
router.register("tasks", TaskViewSet, basename="task")
router.register("versions", TaskVersionViewSet, basename="version")
router.register("devices", DeviceViewSet, basename="device")
router.register("results", ResultViewSet, basename="result")
router.register("releases", ReleaseViewSet, basename="release")
router.register("deployments", DeploymentViewSet, basename="deployment")
router.register("pins", PinViewSet, basename="pin")
router.register("alert-channels", ChannelViewSet, basename="alert-channel")
router.register("alert-rules", ErrorRateRuleViewSet, basename="alert-rule")
router.register("alerts", AlertViewSet, basename="alert")

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("metrics", metrics.metrics, name="metrics"),
    path("admin/", admin.site.urls),
    path("api/v1/devices/enroll/", EnrollView.as_view(), name="device-enroll"),
    path("api/v1/tunnel/", TunnelBatchView.as_view(), name="tunnel-batch"),
    path("api/v1/results/export/", ResultExportView.as_view(), name="results-export"),
    path("api/v1/results/rate/", data_views.ResultRateView.as_view(), name="results-rate"),
    path("api/v1/run-health/", data_views.RunHealthView.as_view(), name="run-health"),
    path("api/v1/", include(router.urls)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves its start-up script as a file: the CSP allows no inline script.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api-docs"),
    re_path(r"^content/blobs/(?P<sha256>[0-9a-f]{64})$", content_views.blob, name="content-blob"),
    re_path(
        r"^content/manifests/(?P<digest>[0-9a-f]{64})\.json$",
        content_views.manifest,
        name="content-manifest",
    ),
    path("", include("console.urls")),
]

# Errors outside DRF views (unknown URLs, refused uploads, crashes): JSON under /api/ and the
# other program-facing paths, Django's pages elsewhere.
handler400 = "walle_web.views.bad_request"
handler403 = "walle_web.views.permission_denied"
handler404 = "walle_web.views.page_not_found"
handler500 = "walle_web.views.server_error"
