"""Prometheus text exposition of the platform's own numbers.

The figures span every app, so they are shown only to a caller with the metrics token
(`Authorization: Bearer <WALLE_METRICS_TOKEN>`, what a Prometheus scrape config sends) or a
superuser's session; anyone else gets a 401 that says how to authenticate. The text is
written by prometheus_client (escaping included): database-wide gauges read at scrape time,
then this process's device-path counters (devices/counters.py).
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.db.models import Count
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from devices import counters
from devices.models import Device
from devices.push import registry as sockets
from releases.models import Deployment, Release


class DatabaseCollector(Collector):
    """Numbers every process shares, counted in the database when scraped."""

    def collect(self) -> list[Metric]:
        releases = GaugeMetricFamily("walle_releases", "Releases by state.", labels=["state"])
        for row in Release.objects.values("state").annotate(n=Count("id")).order_by():
            releases.add_metric([row["state"]], row["n"])
        deployments = GaugeMetricFamily(
            "walle_deployments", "Deployments by state.", labels=["state"]
        )
        for row in Deployment.objects.values("state").annotate(n=Count("id")).order_by():
            deployments.add_metric([row["state"]], row["n"])
        online = GaugeMetricFamily(
            "walle_devices_online",
            "Devices marked online in the database (all processes).",
            value=Device.objects.filter(online=True).count(),
        )
        return [releases, deployments, online]


class SocketCollector(Collector):
    """This process's socket registry (devices/push.py), read at scrape time."""

    def collect(self) -> list[Metric]:
        return [
            GaugeMetricFamily(
                "walle_process_connected_devices",
                "Device sockets held by this server process.",
                value=len(sockets.sockets),
            ),
            CounterMetricFamily(
                "walle_process_notices_sent",
                "Doorbell frames written by this process.",
                value=sockets.notices_sent,
            ),
        ]


# Read at scrape time (the device-path counters live in devices/counters.py).
SCRAPED = CollectorRegistry(auto_describe=False)
SCRAPED.register(DatabaseCollector())
SCRAPED.register(SocketCollector())


def allowed(request: HttpRequest) -> bool:
    token = settings.WALLE_METRICS_TOKEN
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if token and scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token):
        return True
    user = getattr(request, "user", None)
    return bool(getattr(user, "is_superuser", False))


def metrics(request: HttpRequest) -> HttpResponse:
    if not allowed(request):
        response = JsonResponse(
            {
                "detail": "metrics span every app: send 'Authorization: Bearer <WALLE_METRICS_TOKEN>' "
                "(set that variable on the server) or log in as a superuser"
            },
            status=401,
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    body = generate_latest(SCRAPED) + generate_latest(counters.REGISTRY)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
