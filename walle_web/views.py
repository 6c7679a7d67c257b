from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults

# Paths whose callers are programs: errors there are JSON, like every DRF error.
JSON_PREFIXES = ("/api/", "/internal/", "/metrics", "/healthz", "/content/")


def healthz(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"ok": True})


def error_response(request: HttpRequest, status: int, detail: str) -> HttpResponse:
    if request.path.startswith(JSON_PREFIXES):
        return JsonResponse({"detail": detail}, status=status)
    return HttpResponse(detail, status=status, content_type="text/plain; charset=utf-8")


# Django's error views for what never reaches a DRF view (unknown URLs, refused uploads,
# disallowed hosts, crashes): JSON for programs, Django's pages for the console.
def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if request.path.startswith(JSON_PREFIXES):
        return error_response(request, 400, str(exception or "") or "bad request")
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if request.path.startswith(JSON_PREFIXES):
        return error_response(request, 403, str(exception or "") or "permission denied")
    return defaults.permission_denied(request, exception)


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if request.path.startswith(JSON_PREFIXES):
        return error_response(request, 404, "not found")
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if request.path.startswith(JSON_PREFIXES):
        return error_response(request, 500, "server error; it is logged, please report it")
    return defaults.server_error(request)
