"""The device's bundle cache: content-addressed files, verified manifests, atomic activation.

Nothing runs unless its manifest carries a valid signature of the platform's release key and
every file matches the sha256 the manifest names. Activation is one atomic rename of a small
JSON record, so a crash leaves either the old version or the new one active, never a mix.
The previous version stays cached, so a rollback switches back without a download.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from walle_device.protocol import canonical_json


class VerifyError(Exception):
    """Content that must not run; `code` is the error code the device reports."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# Signatures this process already checked: (release key, signature, sha256 of the signed
# bytes). Ed25519 verification is deterministic, so the same key, signature and payload
# verify the same way again; the payload's hash is still computed for every document above,
# so a changed manifest never matches an entry. Thousands of simulated devices in one process
# pull the same manifest (walle_device.fleet): each still downloads, hashes and parses it,
# and the public-key check runs once. A real device verifies each version once anyway.
_VERIFIED: dict[tuple[str, str, str], None] = {}
_VERIFIED_MAX = 256


def verify_manifest(doc: object, release_key_b64: str, expected_digest: str) -> dict:
    """Check a downloaded manifest document; return the manifest if it is signed and intact."""
    if (
        not isinstance(doc, dict)
        or not isinstance(doc.get("manifest"), dict)
        or not isinstance(doc.get("signature"), str)
    ):
        raise VerifyError("bad_manifest", "manifest document lacks 'manifest' or 'signature'")
    manifest = doc["manifest"]
    payload = canonical_json(manifest)
    digest = hashlib.sha256(payload).hexdigest()
    if digest != expected_digest:
        raise VerifyError(
            "hash_mismatch",
            f"manifest digest {digest[:12]}… is not the announced {expected_digest[:12]}…",
        )
    checked = (release_key_b64, doc["signature"], digest)
    if checked not in _VERIFIED:
        try:
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(release_key_b64))
            key.verify(base64.b64decode(doc["signature"]), payload)
        except (InvalidSignature, ValueError) as exc:
            raise VerifyError(
                "bad_signature",
                f"manifest signature does not verify with the release key ({type(exc).__name__})",
            ) from None
        if len(_VERIFIED) >= _VERIFIED_MAX:
            _VERIFIED.pop(next(iter(_VERIFIED)))
        _VERIFIED[checked] = None
    files = manifest.get("files")
    if not isinstance(files, list) or not all(
        isinstance(f, dict) and isinstance(f.get("path"), str) and isinstance(f.get("sha256"), str)
        for f in files
    ):
        raise VerifyError("bad_manifest", "manifest 'files' must be a list of {path, sha256, size}")
    for f in files:
        if f["path"].startswith("/") or ".." in f["path"].split("/"):
            raise VerifyError("bad_manifest", f"manifest path {f['path']!r} escapes the bundle")
    return manifest


@dataclass
class ActiveVersion:
    task: str
    version: int
    digest: str
    manifest: dict
    previous: dict | None = None  # {"version", "digest", "manifest"} kept for instant rollback


class BundleCache:
    """Blobs by sha256 plus one active record per task; on disk, or in memory for simulated devices."""

    def __init__(self, root: Path | None, max_bytes: int = 512 * 1024 * 1024) -> None:
        self.root = Path(root) if root else None
        self.max_bytes = max_bytes
        self._mem_blobs: dict[str, bytes] = {}
        self._mem_active: dict[str, ActiveVersion] = {}
        if self.root:
            (self.root / "blobs").mkdir(parents=True, exist_ok=True)
            (self.root / "active").mkdir(parents=True, exist_ok=True)

    # blobs
    def has(self, sha256: str) -> bool:
        if self.root is None:
            return sha256 in self._mem_blobs
        return self._blob_path(sha256).is_file()

    def _blob_path(self, sha256: str) -> Path:
        assert self.root is not None
        return self.root / "blobs" / sha256[:2] / sha256[2:]

    def put(self, sha256: str, data: bytes) -> None:
        """Store a blob after checking its hash; raise VerifyError on a mismatch."""
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise VerifyError(
                "hash_mismatch",
                f"file content hashes to {actual[:12]}…, manifest says {sha256[:12]}…",
            )
        if self.root is None:
            self._mem_blobs[sha256] = data
            return
        atomic_write(self._blob_path(sha256), data)

    def read(self, sha256: str) -> bytes:
        if self.root is None:
            data = self._mem_blobs[sha256]
        else:
            data = self._blob_path(sha256).read_bytes()
        # Re-verify on read: a file changed on disk after download must not run either.
        if hashlib.sha256(data).hexdigest() != sha256:
            raise VerifyError("hash_mismatch", f"cached file {sha256[:12]}… was modified on disk")
        return data

    # activation
    def active(self, task: str) -> ActiveVersion | None:
        if self.root is None:
            return self._mem_active.get(task)
        path = self.root / "active" / f"{task}.json"
        if not path.is_file():
            return None
        return ActiveVersion(**json.loads(path.read_text()))

    def all_active(self) -> dict[str, ActiveVersion]:
        if self.root is None:
            return dict(self._mem_active)
        result = {}
        for path in sorted((self.root / "active").glob("*.json")):
            av = ActiveVersion(**json.loads(path.read_text()))
            result[av.task] = av
        return result

    def activate(self, task: str, version: int, digest: str, manifest: dict) -> ActiveVersion:
        """Make `version` the active one; every file must already be in the cache."""
        missing = [f["path"] for f in manifest["files"] if not self.has(f["sha256"])]
        if missing:
            raise VerifyError(
                "install_failed", f"cannot activate: files missing from cache: {', '.join(missing)}"
            )
        current = self.active(task)
        previous = None
        if current is not None and current.version != version:
            previous = {
                "version": current.version,
                "digest": current.digest,
                "manifest": current.manifest,
            }
        elif current is not None:
            previous = current.previous
        av = ActiveVersion(
            task=task, version=version, digest=digest, manifest=manifest, previous=previous
        )
        if self.root is None:
            self._mem_active[task] = av
        else:
            atomic_write(self.root / "active" / f"{task}.json", json.dumps(av.__dict__).encode())
            self.collect_garbage()
        return av

    def activate_previous(self, task: str, digest: str) -> ActiveVersion | None:
        """Roll back to the version before, when it is the one with `digest` and all its files
        are still cached: its manifest was verified when it was pulled, so the switch needs
        no download. None when that is not possible (the caller pulls instead)."""
        current = self.active(task)
        prev = current.previous if current is not None else None
        if not prev or prev["digest"] != digest:
            return None
        if not all(self.has(f["sha256"]) for f in prev["manifest"]["files"]):
            return None
        return self.activate(task, prev["version"], prev["digest"], prev["manifest"])

    def files(self, av: ActiveVersion) -> dict[str, bytes]:
        return {f["path"]: self.read(f["sha256"]) for f in av.manifest["files"]}

    def collect_garbage(self) -> int:
        """Drop blobs no active or previous version uses, when the cache is over its size."""
        if self.root is None:
            return 0
        keep = set()
        for av in self.all_active().values():
            keep.update(f["sha256"] for f in av.manifest["files"])
            if av.previous:
                keep.update(f["sha256"] for f in av.previous["manifest"]["files"])
        blobs = [p for p in (self.root / "blobs").glob("*/*") if p.is_file()]
        total = sum(p.stat().st_size for p in blobs)
        removed = 0
        for p in sorted(blobs, key=lambda p: p.stat().st_mtime):
            if total <= self.max_bytes:
                break
            sha = p.parent.name + p.name
            if sha not in keep:
                total -= p.stat().st_size
                p.unlink()
                removed += 1
        return removed


def atomic_write(path: Path, data: bytes) -> None:
    """Write through a temporary file, fsync, rename: readers see the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
