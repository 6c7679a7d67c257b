"""The content-addressed store: a file's name is its SHA-256, so a URL never changes meaning."""

from __future__ import annotations

import hashlib
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

    def read(self, sha256: str) -> bytes:
        return self.path(sha256).read_bytes()


def content_store() -> ContentStore:
    return ContentStore(settings.WALLE_CONTENT_DIR)


def blob_url(sha256: str) -> str:
    return f"{settings.WALLE_CONTENT_BASE_URL}blobs/{sha256}"


def manifest_url(digest: str) -> str:
    return f"{settings.WALLE_CONTENT_BASE_URL}manifests/{digest}.json"
