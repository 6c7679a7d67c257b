"""The platform's Ed25519 release key: it signs every manifest, devices verify before running."""

from __future__ import annotations

import base64
import functools
import os
import tempfile

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings


@functools.cache
def release_key() -> Ed25519PrivateKey:
    path = settings.WALLE_RELEASE_KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        # Write a private temporary file, then link it into place: link fails if another
        # process won the race, and nobody can ever read a half-written key.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".release-key-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(pem)
                fh.flush()
                os.fsync(fh.fileno())
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return key


def public_key_b64() -> str:
    raw = (
        release_key()
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    return base64.b64encode(raw).decode()


def sign(data: bytes) -> str:
    return base64.b64encode(release_key().sign(data)).decode()
