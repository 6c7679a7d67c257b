"""The content-addressed store: a file's name is its SHA-256, so a URL never changes meaning.

Blobs live at `root/ab/cdef…` (the file's SHA-256); the signed manifest document of each
version at `root/manifests/<digest>.json`, written once at upload, so the content handler
(tasks/content.py), a static server or a CDN can serve both without the database.
"""

from __future__ import annotations

import base64
import hashlib
import json
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

    def manifest_path(self, digest: str) -> Path:
        if not is_sha256(digest):
            raise ValueError(f"not a sha256 digest: {digest!r}")
        return self.root / "manifests" / f"{digest}.json"

    def put_manifest(self, manifest: dict, signature: str, digest: str) -> bytes:
        """Write (once) and return the manifest document devices download."""
        target = self.manifest_path(digest)
        if target.is_file():
            return target.read_bytes()
        document = manifest_document(manifest, signature, digest, self)
        atomic_write(target, document)
        return document


def manifest_document(manifest: dict, signature: str, digest: str, store: ContentStore) -> bytes:
    """The signed manifest, plus small files inlined (base64, by sha256) so that a device
    pulling a small version makes one request instead of one per file. Inlined bytes are
    outside the signature, but the signed manifest names each file's sha256 and the device
    checks it, exactly as for a downloaded blob."""
    inline: dict[str, str] = {}
    budget = settings.WALLE_INLINE_TOTAL_BYTES
    for entry in sorted(manifest["files"], key=lambda f: f["size"]):
        size = int(entry["size"])
        if size > settings.WALLE_INLINE_MAX_BYTES or size > budget:
            continue
        if entry["sha256"] in inline or not store.exists(entry["sha256"]):
            continue
        inline[entry["sha256"]] = base64.b64encode(store.read(entry["sha256"])).decode()
        budget -= size
    document: dict = {"manifest": manifest, "signature": signature, "digest": digest}
    if inline:
        document["inline"] = inline
    return json.dumps(document, separators=(",", ":")).encode()


def content_store() -> ContentStore:
    return ContentStore(settings.WALLE_CONTENT_DIR)


def blob_url(sha256: str) -> str:
    return f"{settings.WALLE_CONTENT_BASE_URL}blobs/{sha256}"


def manifest_url(digest: str) -> str:
    return f"{settings.WALLE_CONTENT_BASE_URL}manifests/{digest}.json"
