"""Content downloads from the ASGI handler (no Django view, no database): immutable caching,
conditional requests, byte ranges, inlined small files in the signed manifest."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json

import pytest
from channels.testing import HttpCommunicator

from tasks.content import SmallContentCache, parse_range
from tests.cast import make_version
from walle_device.bundles import verify_manifest
from walle_device.protocol import canonical_json
from walle_web.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)

BIG = bytes(range(256)) * 100  # 25,600 bytes: above the inlining limit


def get(path: str, method: str = "GET", headers: dict | None = None) -> dict:
    comm = HttpCommunicator(
        application,
        method,
        path,
        headers=[
            (k.lower().encode(), v.encode())
            for k, v in {"Host": "testserver", **(headers or {})}.items()
        ],
    )
    return asyncio.run(comm.get_response(timeout=5))


def header(response: dict, name: bytes) -> bytes | None:
    return dict(response["headers"]).get(name)


def test_a_blob_is_served_immutable_with_its_digest_as_etag(cast):
    sha = hashlib.sha256(BIG).hexdigest()
    make_version(cast.task, big__bin=BIG)
    r = get(f"/content/blobs/{sha}")
    assert r["status"] == 200 and r["body"] == BIG
    assert header(r, b"etag") == f'"{sha}"'.encode()
    assert b"immutable" in header(r, b"cache-control")
    again = get(f"/content/blobs/{sha}", headers={"If-None-Match": f'"{sha}"'})
    assert again["status"] == 304 and again["body"] == b""
    head = get(f"/content/blobs/{sha}", method="HEAD")
    assert head["status"] == 200 and head["body"] == b""
    assert header(head, b"content-length") == str(len(BIG)).encode()


def test_byte_ranges_resume_a_download(cast):
    sha = hashlib.sha256(BIG).hexdigest()
    make_version(cast.task, big__bin=BIG)
    part = get(f"/content/blobs/{sha}", headers={"Range": "bytes=100-199"})
    assert part["status"] == 206 and part["body"] == BIG[100:200]
    assert header(part, b"content-range") == f"bytes 100-199/{len(BIG)}".encode()
    tail = get(f"/content/blobs/{sha}", headers={"Range": "bytes=-10"})
    assert tail["status"] == 206 and tail["body"] == BIG[-10:]
    past = get(f"/content/blobs/{sha}", headers={"Range": f"bytes={len(BIG)}-"})
    assert past["status"] == 416
    assert header(past, b"content-range") == f"bytes */{len(BIG)}".encode()
    stale = get(f"/content/blobs/{sha}", headers={"Range": "bytes=0-9", "If-Range": '"other"'})
    assert stale["status"] == 200 and stale["body"] == BIG


def test_the_manifest_document_is_signed_and_inlines_small_files(cast):
    version = make_version(cast.task, big__bin=BIG)
    r = get(f"/content/manifests/{version.digest}.json")
    assert r["status"] == 200 and header(r, b"etag") == f'"{version.digest}"'.encode()
    document = json.loads(r["body"])
    from tasks.signing import public_key_b64

    manifest = verify_manifest(document, public_key_b64(), version.digest)
    sizes = {f["path"]: f for f in manifest["files"]}
    # main.py is small: inlined; big.bin is not. Inlined bytes hash to the signed sha256.
    main = sizes["main.py"]
    assert set(document["inline"]) == {main["sha256"]}
    data = base64.b64decode(document["inline"][main["sha256"]])
    assert hashlib.sha256(data).hexdigest() == main["sha256"]
    assert hashlib.sha256(canonical_json(manifest)).hexdigest() == version.digest


def test_a_manifest_not_on_disk_yet_is_written_by_the_django_view(cast, settings):
    version = make_version(cast.task)
    path = settings.WALLE_CONTENT_DIR / "manifests" / f"{version.digest}.json"
    path.unlink()  # as for a version uploaded before manifests were stored as files
    r = get(f"/content/manifests/{version.digest}.json")
    assert r["status"] == 200 and json.loads(r["body"])["digest"] == version.digest
    assert path.is_file()


def test_unknown_content_and_other_methods_are_refused(cast):
    assert get(f"/content/blobs/{'0' * 64}")["status"] == 404
    assert get("/content/blobs/../../etc/passwd")["status"] == 404
    assert get(f"/content/manifests/{'0' * 64}.json")["status"] == 404  # via Django: no version
    sha = hashlib.sha256(BIG).hexdigest()
    make_version(cast.task, big__bin=BIG)
    assert get(f"/content/blobs/{sha}", method="POST")["status"] == 405


@pytest.mark.parametrize(
    ("header_value", "expected"),
    [
        ("", None),
        ("bytes=0-0", (0, 0)),
        ("bytes=5-", (5, 99)),
        ("bytes=-5", (95, 99)),
        ("bytes=90-500", (90, 99)),
        ("bytes=0-1,5-6", None),
        ("items=0-1", None),
        ("bytes=100-", False),
        ("bytes=-0", False),
        ("bytes=7-3", False),
    ],
)
def test_range_parsing(header_value, expected):
    assert parse_range(header_value, 100) == expected


def test_the_small_content_cache_keeps_the_recently_used_files_within_its_bound():
    cache = SmallContentCache(max_bytes=10, max_file_bytes=6)
    cache.put("a", b"aaaa")
    cache.put("b", b"bbbb")
    assert cache.get("a") == b"aaaa"  # now the most recently used
    cache.put("c", b"cccc")  # 12 bytes: the least recently used goes
    assert cache.get("b") is None and cache.get("a") == b"aaaa" and cache.get("c") == b"cccc"
    cache.put("big", b"x" * 7)  # over the per-file limit: served from disk, never cached
    assert cache.get("big") is None and cache.used <= 10


def test_repeated_downloads_and_ranges_from_memory_match_the_file(cast):
    sha = hashlib.sha256(BIG).hexdigest()
    make_version(cast.task, big__bin=BIG)
    bodies = [get(f"/content/blobs/{sha}")["body"] for _ in range(3)]
    assert bodies == [BIG, BIG, BIG]
    part = get(f"/content/blobs/{sha}", headers={"Range": "bytes=25000-"})
    assert part["status"] == 206 and part["body"] == BIG[25000:]
