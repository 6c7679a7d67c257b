from __future__ import annotations

import io
import json
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tasks.bundles import BundleError
from tasks.models import Blob
from tasks.services import create_version
from tests.cast import HELLO_TASK, make_version
from walle_device.bundles import VerifyError, verify_manifest

pytestmark = pytest.mark.django_db


def release_key():
    from tasks.signing import public_key_b64

    return public_key_b64()


def test_a_version_gets_a_signed_manifest_that_devices_verify(cast):
    v = cast.version
    manifest = verify_manifest(
        {"manifest": v.manifest, "signature": v.signature}, release_key(), v.digest
    )
    assert manifest["files"][0]["path"] == "main.py"
    assert v.number == 1 and v.parent is None


def test_a_tampered_manifest_is_refused(cast):
    v = cast.version
    forged = json.loads(json.dumps(v.manifest))
    forged["files"][0]["sha256"] = "0" * 64
    with pytest.raises(VerifyError) as info:
        verify_manifest({"manifest": forged, "signature": v.signature}, release_key(), v.digest)
    assert info.value.code == "hash_mismatch"
    import hashlib

    from walle_device.protocol import canonical_json

    with pytest.raises(VerifyError) as info:
        verify_manifest(
            {"manifest": forged, "signature": v.signature},
            release_key(),
            hashlib.sha256(canonical_json(forged)).hexdigest(),
        )
    assert info.value.code == "bad_signature"


def test_versions_number_up_and_record_their_parent_and_share_identical_files(cast):
    v2 = make_version(cast.task, HELLO_TASK, model__bin=b"weights")
    v3 = make_version(cast.task, HELLO_TASK + b"# v3\n", model__bin=b"weights")
    assert (v2.number, v2.parent, v3.parent) == (2, cast.version, v2)
    assert Blob.objects.count() == 3  # hello (v1 and v2), hello+comment (v3), weights (v2 and v3)
    assert {f["path"] for f in v3.manifest["files"]} == {"main.py", "model.bin"}


@pytest.mark.parametrize(
    ("files", "entry", "config", "field", "fragment"),
    [
        ({"/etc/passwd": b"x", "main.py": HELLO_TASK}, "main.py", {}, "files", "absolute path"),
        ({"../up.py": b"x", "main.py": HELLO_TASK}, "main.py", {}, "files", "'..'"),
        ({"a\\b.py": b"x", "main.py": HELLO_TASK}, "main.py", {}, "files", "backslash"),
        ({"main.py": HELLO_TASK}, "other.py", {}, "entry_point", "not among the uploaded files"),
        ({"main.py": b"def run(ctx):\n  return (\n"}, "main.py", {}, "entry_point", "syntax error"),
        ({"main.py": b"x = 1\n"}, "main.py", {}, "entry_point", "run(ctx)"),
        (
            {"main.py": HELLO_TASK},
            "main.py",
            {"timout_ms": 5},
            "config",
            "unknown config key 'timout_ms'",
        ),
        ({"main.py": HELLO_TASK}, "main.py", {"timeout_s": 0}, "config", "more than 0"),
        (
            {"main.py": HELLO_TASK},
            "main.py",
            {"models": ["m.onnx"]},
            "config",
            "not among the uploaded files",
        ),
        ({"main.py": HELLO_TASK}, "main.py", [1], "config", "JSON object"),
        ({}, "main.py", {}, "files", "at least one file"),
    ],
)
def test_bad_uploads_say_what_is_wrong(cast, files, entry, config, field, fragment):
    with pytest.raises(BundleError) as info:
        create_version(cast.task, files=files, entry_point=entry, config=config)
    assert any(fragment in message for message in info.value.errors[field]), info.value.errors


def test_size_limits_are_enforced(cast, settings):
    settings.WALLE_MAX_FILE_BYTES = 100
    with pytest.raises(BundleError) as info:
        create_version(
            cast.task,
            files={"main.py": HELLO_TASK, "big.bin": b"x" * 101},
            entry_point="main.py",
            config={},
        )
    assert "limit is 100 bytes" in info.value.errors["files"][0]


def test_operators_upload_multipart_files_through_the_api(cast):
    response = cast.api("operator").post(
        f"/api/v1/tasks/{cast.task.pk}/versions/",
        {
            "files": [
                SimpleUploadedFile("main.py", HELLO_TASK),
                SimpleUploadedFile("util.py", b"X = 1\n"),
            ],
            "paths": json.dumps(["main.py", "lib/util.py"]),
            "entry_point": "main.py",
            "config": json.dumps({"params": {"k": 3}}),
            "notes": "adds util",
        },
        format="multipart",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["number"] == 2 and body["config"] == {"params": {"k": 3}}
    assert [f["path"] for f in body["files"]] == ["lib/util.py", "main.py"]


def zip_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return buf.getvalue()


def test_a_zip_bundle_with_walle_json_is_accepted(cast):
    bundle = zip_of(
        {
            "main.py": HELLO_TASK,
            "walle.json": json.dumps(
                {"entry_point": "main.py", "config": {"timeout_s": 0.5}}
            ).encode(),
        }
    )
    response = cast.api("operator").post(
        f"/api/v1/tasks/{cast.task.pk}/versions/",
        {"bundle": SimpleUploadedFile("t.zip", bundle)},
        format="multipart",
    )
    assert response.status_code == 201, response.content
    assert response.json()["config"] == {"timeout_s": 0.5}


def test_a_zip_with_path_traversal_is_refused(cast):
    bundle = zip_of({"main.py": HELLO_TASK, "../../evil.py": b"x"})
    response = cast.api("operator").post(
        f"/api/v1/tasks/{cast.task.pk}/versions/",
        {"bundle": SimpleUploadedFile("t.zip", bundle)},
        format="multipart",
    )
    assert response.status_code == 400
    assert "'..'" in json.dumps(response.json())


def test_not_a_zip_is_refused(cast):
    response = cast.api("operator").post(
        f"/api/v1/tasks/{cast.task.pk}/versions/",
        {"bundle": SimpleUploadedFile("t.zip", b"nope")},
        format="multipart",
    )
    assert response.status_code == 400
    assert "not a valid .zip" in json.dumps(response.json())


def test_viewers_cannot_upload_and_outsiders_cannot_see(cast):
    upload = {"files": [SimpleUploadedFile("main.py", HELLO_TASK)], "entry_point": "main.py"}
    assert (
        cast.api("viewer")
        .post(f"/api/v1/tasks/{cast.task.pk}/versions/", upload, format="multipart")
        .status_code
        == 403
    )
    assert cast.api("outsider").get(f"/api/v1/tasks/{cast.task.pk}/versions/").status_code == 404
    assert cast.api("outsider").get("/api/v1/tasks/").json()["results"] == []


def test_an_upload_with_neither_files_nor_bundle_is_a_clear_400(cast):
    response = cast.api("operator").post(
        f"/api/v1/tasks/{cast.task.pk}/versions/", {"entry_point": "main.py"}, format="multipart"
    )
    assert response.status_code == 400
    assert "send the task's files" in json.dumps(response.json())


def test_content_is_served_immutable_with_etag_and_304(cast, client):
    v = cast.version
    sha = v.manifest["files"][0]["sha256"]
    response = client.get(f"/content/blobs/{sha}")
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == HELLO_TASK
    assert "immutable" in response["Cache-Control"] and response["ETag"] == f'"{sha}"'
    assert (
        client.get(f"/content/blobs/{sha}", headers={"If-None-Match": f'"{sha}"'}).status_code
        == 304
    )
    manifest = client.get(f"/content/manifests/{v.digest}.json")
    assert manifest.status_code == 200 and manifest.json()["signature"] == v.signature
    assert client.get(f"/content/blobs/{'0' * 64}").status_code == 404
    assert client.get("/content/blobs/../../etc/passwd").status_code == 404


def test_tasks_are_created_by_operators_only(cast):
    assert (
        cast.api("operator")
        .post("/api/v1/tasks/", {"app": "shop-android", "name": "ranker"}, format="json")
        .status_code
        == 201
    )
    assert (
        cast.api("viewer")
        .post("/api/v1/tasks/", {"app": "shop-android", "name": "ranker2"}, format="json")
        .status_code
        == 403
    )
    # Another tenant's app reads as a missing one (400), never a 403 that confirms it exists.
    assert (
        cast.api("outsider")
        .post("/api/v1/tasks/", {"app": "shop-android", "name": "ranker3"}, format="json")
        .status_code
        == 400
    )
    dup = cast.api("operator").post(
        "/api/v1/tasks/", {"app": "shop-android", "name": "ranker"}, format="json"
    )
    assert dup.status_code == 400


def test_the_version_list_of_a_task_is_served(cast):
    make_version(cast.task)
    body = cast.api("viewer").get(f"/api/v1/tasks/{cast.task.pk}/versions/").json()
    assert [v["number"] for v in body["results"]] == [2, 1]
    assert body["results"][0]["parent"] == 1
