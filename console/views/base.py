"""Rendering helpers shared by the console pages."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from walle_device.protocol import loads_strict


def page(request: HttpRequest, template: str, ctx: dict | None = None, status: int = 200):
    # The app switcher and role flags come from the console.context processor (settings).
    return render(request, template, ctx or {}, status=status)


def read_json(request: HttpRequest) -> tuple[dict | None, HttpResponse | None]:
    """The request body as a JSON object, or an error response that says what is wrong."""
    try:
        body = loads_strict(request.body or b"{}")
    except (ValueError, UnicodeDecodeError) as exc:
        return None, JsonResponse({"errors": [f"the body is not JSON: {exc}"]}, status=400)
    if not isinstance(body, dict):
        return None, JsonResponse({"errors": ["the body must be a JSON object"]}, status=400)
    return body, None
