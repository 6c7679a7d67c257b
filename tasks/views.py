"""Content-addressed downloads: immutable URLs a CDN or any static server can cache forever."""

from __future__ import annotations

from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseNotModified
from django.views.decorators.http import require_safe

from tasks.models import TaskVersion
from tasks.storage import content_store, is_sha256

IMMUTABLE = "public, max-age=31536000, immutable"


def _not_modified(request: HttpRequest, etag: str) -> bool:
    return etag in [t.strip() for t in request.headers.get("If-None-Match", "").split(",")]


@require_safe
def blob(request: HttpRequest, sha256: str) -> HttpResponse:
    if not is_sha256(sha256):
        raise Http404("not a sha256 digest")
    path = content_store().path(sha256)
    if not path.is_file():
        raise Http404("no such content")
    etag = f'"{sha256}"'
    if _not_modified(request, etag):
        response: HttpResponse = HttpResponseNotModified()
    else:
        response = FileResponse(open(path, "rb"), content_type="application/octet-stream")
    response["ETag"] = etag
    response["Cache-Control"] = IMMUTABLE
    return response


@require_safe
def manifest(request: HttpRequest, digest: str) -> HttpResponse:
    if not is_sha256(digest):
        raise Http404("not a sha256 digest")
    # Only versions uploaded before manifests were written to the content store get here
    # (tasks/content.py serves the file otherwise); write it now so the next one does not.
    version = TaskVersion.objects.filter(digest=digest).first()
    if version is None:
        raise Http404("no such manifest")
    etag = f'"{digest}"'
    document = content_store().put_manifest(version.manifest, version.signature, version.digest)
    if _not_modified(request, etag):
        response: HttpResponse = HttpResponseNotModified()
    else:
        response = HttpResponse(document, content_type="application/json")
    response["ETag"] = etag
    response["Cache-Control"] = IMMUTABLE
    return response
