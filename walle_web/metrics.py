"""Prometheus text exposition of the platform's own numbers.

The figures span every app, so they are shown only to a caller with the metrics token
(`Authorization: Bearer <WALLE_METRICS_TOKEN>`, what a Prometheus scrape config sends) or a
superuser's session; anyone else gets a 401 that says how to authenticate.
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.db.models import Count
from django.http import HttpRequest, HttpResponse, JsonResponse

from devices.models import Device
from devices.push import registry
from releases.models import Deployment, Release

# Incremented by the device consumer in this process.
COUNTERS = {
    "reports_received": 0,
    "uploads_received": 0,
    "frames_rejected": 0,
    "messages_deferred": 0,
    "handshakes_deferred": 0,
}


def _lines(name: str, kind: str, help_text: str, samples: list[tuple[dict, float]]) -> list[str]:
    out = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    for labels, value in samples:
        label = ",".join(f'{k}="{v}"' for k, v in labels.items())
        out.append(f"{name}{{{label}}} {value}" if label else f"{name} {value}")
    return out


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
    releases = Release.objects.values("state").annotate(n=Count("id")).order_by()
    deployments = Deployment.objects.values("state").annotate(n=Count("id")).order_by()
    lines = [
        *_lines(
            "walle_releases",
            "gauge",
            "Releases by state.",
            [({"state": r["state"]}, r["n"]) for r in releases],
        ),
        *_lines(
            "walle_deployments",
            "gauge",
            "Deployments by state.",
            [({"state": r["state"]}, r["n"]) for r in deployments],
        ),
        *_lines(
            "walle_devices_online",
            "gauge",
            "Devices marked online in the database (all processes).",
            [({}, Device.objects.filter(online=True).count())],
        ),
        *_lines(
            "walle_process_connected_devices",
            "gauge",
            "Device sockets held by this server process.",
            [({}, len(registry.sockets))],
        ),
        *_lines(
            "walle_process_notices_sent_total",
            "counter",
            "Doorbell frames written by this process.",
            [({}, registry.notices_sent)],
        ),
        *_lines(
            "walle_process_reports_received_total",
            "counter",
            "Deployment reports received by this process.",
            [({}, COUNTERS["reports_received"])],
        ),
        *_lines(
            "walle_process_uploads_received_total",
            "counter",
            "Tunnel items received by this process.",
            [({}, COUNTERS["uploads_received"])],
        ),
        *_lines(
            "walle_process_frames_rejected_total",
            "counter",
            "Device frames answered with an error by this process.",
            [({}, COUNTERS["frames_rejected"])],
        ),
        *_lines(
            "walle_process_messages_deferred_total",
            "counter",
            "Device messages answered 'busy, retry_after' because the ingest queue was full.",
            [({}, COUNTERS["messages_deferred"])],
        ),
        *_lines(
            "walle_process_handshakes_deferred_total",
            "counter",
            "Device handshakes closed with 1013 (try again later) under overload.",
            [({}, COUNTERS["handshakes_deferred"])],
        ),
    ]
    return HttpResponse("\n".join(lines) + "\n", content_type="text/plain; version=0.0.4")
