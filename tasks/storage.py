"""The content-addressed store: a file's name is its SHA-256, so a URL never changes meaning."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from django.conf import settings

from walle_device.bundles import atomic_write

SHA256_HEX = frozenset("0123456789abcdef")


def is_sha256(value: str) -> bool:
    return len(value) == 64 and set(value) <= SHA256_HEX


class ContentStore:
    """Files under root/ab/cdef…; written once through a temporary file and an atomic rename."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, sha256: str) -> Path:
        if not is_sha256(sha256):
            raise ValueError(f"not a sha256 digest: {sha256!r}")
        return self.root / sha256[:2] / sha256[2:]

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def put(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        target = self.path(sha)
        if target.is_file():
            return sha
        atomic_write(target, data)
        return sha

    def put_file(self, source: Path) -> tuple[str, int]:
        """Store a file without reading it into memory; returns its sha256 and size."""
        digest = hashlib.sha256()
        with open(source, "rb") as fh:
            while chunk := fh.read(1024 * 1024):
                digest.update(chunk)
        sha = digest.hexdigest()
        target = self.path(sha)
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as out, open(source, "rb") as fh:
                    shutil.copyfileobj(fh, out, 1024 * 1024)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return sha, source.stat().st_size

    def read(self, sha256: str) -> bytes:
        return self.path(sha256).read_bytes()


def content_store() -> ContentStore:
    return ContentStore(settings.WALLE_CONTENT_DIR)


def blob_url(sha256: str) -> str:
    return f"{settings.WALLE_CONTENT_BASE_URL}blobs/{sha256}"


def manifest_url(digest: str) -> str:
    return f"{settings.WALLE_CONTENT_BASE_URL}manifests/{digest}.json"
