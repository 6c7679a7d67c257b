"""Content downloads off the Django path: a small ASGI handler for /content/.

Blobs and manifest documents are immutable files named by their SHA-256, so serving them
needs no database, no middleware and no thread: this handler answers on the event loop with
a strong ETag (the digest), `Cache-Control: immutable`, conditional requests and single byte
ranges. Through Django each GET cost a new thread and 2–4 ms of server CPU (bench/README.md).
A manifest that is not on disk yet (a version uploaded before manifests were written there)
falls through to the Django view, which writes it.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path

from django.conf import settings

from tasks.storage import ContentStore

IMMUTABLE = b"public, max-age=31536000, immutable"
CHUNK = 256 * 1024
_BLOB = re.compile(r"^blobs/([0-9a-f]{64})$")
_MANIFEST = re.compile(r"^manifests/([0-9a-f]{64})\.json$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")

ASGIApp = Callable[[dict, Callable, Callable], Awaitable[None]]


def parse_range(header: str, size: int) -> tuple[int, int] | bool | None:
    """The (start, end inclusive) of a single-range header; None to serve the whole file
    (no header, or several ranges, which RFC 9110 lets a server ignore); False when the
    range cannot be satisfied."""
    match = _RANGE.match(header.strip())
    if not header or "," in header or match is None:
        return None
    first, last = match.groups()
    if first == "":
        if last == "" or int(last) == 0:
            return False
        return max(0, size - int(last)), size - 1
    start = int(first)
    end = size - 1 if last == "" else min(int(last), size - 1)
    if start >= size or end < start:
        return False
    return start, end


class SmallContentCache:
    """The bytes of small content files, by path, least recently used out first, at most
    `max_bytes` in all. Content is named by its SHA-256 and never rewritten, so a cached copy
    cannot go stale; a release pulls the same few files thousands of times, and each pull was
    an open, an fstat and a read on the event loop (14% of it at 10k devices,
    bench/README.md)."""

    def __init__(self, max_bytes: int = 32 * 1024 * 1024, max_file_bytes: int = 1024 * 1024):
        self.max_bytes = max_bytes
        self.max_file_bytes = max_file_bytes
        self.used = 0
        self._files: OrderedDict[str, bytes] = OrderedDict()

    def get(self, path: str) -> bytes | None:
        data = self._files.get(path)
        if data is not None:
            self._files.move_to_end(path)
        return data

    def put(self, path: str, data: bytes) -> None:
        if len(data) > self.max_file_bytes or path in self._files:
            return
        self._files[path] = data
        self.used += len(data)
        while self.used > self.max_bytes:
            _, dropped = self._files.popitem(last=False)
            self.used -= len(dropped)


class ContentHandler:
    """Serves `<prefix>blobs/<sha256>` and `<prefix>manifests/<digest>.json` from the store."""

    def __init__(self, fallback: ASGIApp, prefix: str = "/content/") -> None:
        self.fallback = fallback
        self.prefix = prefix
        self.cache = SmallContentCache()

    def handles(self, scope: dict) -> bool:
        return scope["type"] == "http" and scope["path"].startswith(self.prefix)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        rest = scope["path"][len(self.prefix) :]
        store = ContentStore(settings.WALLE_CONTENT_DIR)
        if m := _BLOB.match(rest):
            digest, path, ctype = m.group(1), store.path(m.group(1)), b"application/octet-stream"
        elif m := _MANIFEST.match(rest):
            digest, path, ctype = m.group(1), store.manifest_path(m.group(1)), b"application/json"
            if self.cache.get(str(path)) is None and not path.is_file():
                await self.fallback(scope, receive, send)
                return
        else:
            await _plain(
                send, 404, b"not found: content URLs are blobs/<sha256> or manifests/<sha256>.json"
            )
            return
        if scope["method"] not in ("GET", "HEAD"):
            await _plain(send, 405, b"method not allowed", [(b"allow", b"GET, HEAD")])
            return
        await serve_file(scope, send, path, digest, ctype, self.cache)


def _header(scope: dict, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return ""


async def _plain(send: Callable, status: int, body: bytes, extra: list | None = None) -> None:
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", b"%d" % len(body)),
    ]
    await send(
        {"type": "http.response.start", "status": status, "headers": headers + (extra or [])}
    )
    await send({"type": "http.response.body", "body": body})


class _Bytes:
    """A cached file's bytes behind the little of the file API serve_file uses."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def seek(self, pos: int) -> None:
        self.pos = pos

    def read(self, n: int) -> bytes:
        chunk = self.data[self.pos : self.pos + n]
        self.pos += len(chunk)
        return chunk

    def __enter__(self) -> _Bytes:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


async def serve_file(
    scope: dict,
    send: Callable,
    path: Path,
    digest: str,
    ctype: bytes,
    cache: SmallContentCache | None = None,
) -> None:
    data = cache.get(str(path)) if cache is not None else None
    if data is not None:
        fh, size = _Bytes(data), len(data)
    else:
        try:
            fh = open(path, "rb")
        except (FileNotFoundError, IsADirectoryError):
            await _plain(send, 404, b"no such content")
            return
        size = os.fstat(fh.fileno()).st_size
        if cache is not None and size <= cache.max_file_bytes:
            with fh:
                data = fh.read()
            cache.put(str(path), data)
            fh, size = _Bytes(data), len(data)
    with fh:
        etag = f'"{digest}"'.encode()
        headers = [
            (b"etag", etag),
            (b"cache-control", IMMUTABLE),
            (b"accept-ranges", b"bytes"),
        ]
        matches = _header(scope, b"if-none-match")
        if matches and (
            matches.strip() == "*" or etag.decode() in [t.strip() for t in matches.split(",")]
        ):
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        wanted = parse_range(_header(scope, b"range"), size)
        # If-Range: a range of a different representation must not be served; with an
        # immutable file only a mismatching validator can mean that.
        if_range = _header(scope, b"if-range")
        if wanted and if_range and if_range.strip() != etag.decode():
            wanted = None
        if wanted is False:
            headers += [(b"content-range", b"bytes */%d" % size), (b"content-length", b"0")]
            await send({"type": "http.response.start", "status": 416, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        start, end, status = 0, size - 1, 200
        if wanted:
            start, end = wanted
            status = 206
            headers.append((b"content-range", b"bytes %d-%d/%d" % (start, end, size)))
        length = end - start + 1
        headers += [(b"content-type", ctype), (b"content-length", b"%d" % length)]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        if scope["method"] == "HEAD" or length == 0:
            await send({"type": "http.response.body", "body": b""})
            return
        fh.seek(start)
        # Reads come from the page cache for hot content (a release pulls the same few files
        # thousands of times); chunks keep one large model from holding the loop for long.
        while length > 0:
            chunk = fh.read(min(CHUNK, length))
            if not chunk:
                break
            length -= len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": length > 0})
