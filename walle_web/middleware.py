"""Request checks that hold for every URL, before any view or database sees the input."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.utils.deprecation import MiddlewareMixin

from walle_web.views import error_response


class RefuseUnstorableInput(MiddlewareMixin):
    """NUL characters in the path or query string answer 400.

    PostgreSQL text cannot hold NUL (SQLite can), so a NUL in a URL parameter or path segment
    turned a lookup into a 500 on one database and a 404 on the other.
    """

    def process_request(self, request: HttpRequest) -> HttpResponse | None:
        if "\x00" in request.path:
            return error_response(request, 400, "the URL path contains a NUL character")
        for key, values in request.GET.lists():
            if "\x00" in key or any("\x00" in value for value in values):
                return error_response(
                    request, 400, f"query parameter {key[:40]!r} contains a NUL character"
                )
        return None
