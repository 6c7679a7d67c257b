from __future__ import annotations

import pytest

from devices.models import Device
from devices.services import authenticate_device

pytestmark = pytest.mark.django_db


def test_a_device_enrolls_with_an_app_key_and_gets_a_token_once(cast, client):
    response = client.post(
        "/api/v1/devices/enroll/",
        {
            "enrollment_key": cast.enroll_key,
            "attrs": {"model": "Pixel 8", "tags": ["beta"], "bogus": 1},
        },
        content_type="application/json",
    )
    assert response.status_code == 201
    body = response.json()
    device = Device.objects.get(uid=body["device_id"])
    assert device.app == cast.app and device.model == "Pixel 8" and device.tags == ["beta"]
    assert body["token"].split(".")[1] not in device.token_hash  # stored hashed
    assert authenticate_device(body["token"]) == device
    assert authenticate_device(body["token"] + "x") is None
    assert authenticate_device("garbage") is None


def test_enrollment_with_a_wrong_or_revoked_key_is_refused(cast, client):
    from accounts.models import EnrollmentKey
    from accounts.services import revoke_enrollment_key

    assert (
        client.post(
            "/api/v1/devices/enroll/", {"enrollment_key": "nope"}, content_type="application/json"
        ).status_code
        == 403
    )
    assert (
        client.post("/api/v1/devices/enroll/", {}, content_type="application/json").status_code
        == 400
    )
    for key in EnrollmentKey.objects.filter(app=cast.app):
        revoke_enrollment_key(key)
    response = client.post(
        "/api/v1/devices/enroll/",
        {"enrollment_key": cast.enroll_key},
        content_type="application/json",
    )
    assert response.status_code == 403 and "revoked" in response.json()["enrollment_key"][0]


def test_api_tokens_authenticate_automation(cast, client):
    from rest_framework.authtoken.models import Token

    token = Token.objects.create(user=cast.operator)
    assert (
        client.get("/api/v1/tasks/", headers={"Authorization": f"Token {token.key}"}).status_code
        == 200
    )
    assert client.get("/api/v1/tasks/", headers={"Authorization": "Token wrong"}).status_code == 401
    assert client.get("/api/v1/tasks/").status_code in (401, 403)


def test_admins_create_enrollment_keys_operators_cannot(cast):
    assert (
        cast.api("admin")
        .post("/api/v1/apps/shop-android/enrollment-keys/", {"label": "ci"}, format="json")
        .json()["key"]
        .startswith("wek_")
    )
    assert (
        cast.api("operator")
        .post("/api/v1/apps/shop-android/enrollment-keys/", {}, format="json")
        .status_code
        == 403
    )


def test_the_openapi_schema_and_docs_are_served(cast, client):
    client.force_login(cast.operator)
    schema = client.get("/api/schema/")
    assert schema.status_code == 200 and b"/api/v1/releases/" in schema.content
    assert client.get("/api/docs/").status_code == 200


def test_devices_are_listed_per_app(cast):
    body = cast.api("viewer").get("/api/v1/devices/?app=shop-android").json()
    assert body["count"] == len(cast.devices)
    assert cast.api("outsider").get("/api/v1/devices/?app=shop-android").json()["count"] == 0


@pytest.mark.django_db(transaction=True)
def test_the_asgi_enrollment_path_answers_like_the_api(cast):
    import asyncio
    import json as jsonlib

    from channels.testing import HttpCommunicator

    from devices.services import authenticate_device
    from walle_web.asgi import application

    def post(body: bytes) -> tuple[int, dict]:
        comm = HttpCommunicator(
            application,
            "POST",
            "/api/v1/devices/enroll/",
            body=body,
            headers=[(b"host", b"testserver"), (b"content-type", b"application/json")],
        )
        response = asyncio.run(comm.get_response(timeout=5))
        return response["status"], jsonlib.loads(response["body"])

    status, body = post(
        jsonlib.dumps({"enrollment_key": cast.enroll_key, "attrs": {"model": "Pixel 8"}}).encode()
    )
    assert status == 201 and set(body) == {"device_id", "token", "app", "release_key"}
    device = authenticate_device(body["token"])
    assert device is not None and device.model == "Pixel 8" and device.app == cast.app
    assert post(jsonlib.dumps({"enrollment_key": "nope"}).encode())[0] == 403
    assert post(b"{not json")[0] == 400
    assert post(jsonlib.dumps({"attrs": {}}).encode())[0] == 400
    # Strict JSON and attribute bounds hold on this path too.
    assert post(b'{"enrollment_key": "k", "attrs": {"model": NaN}}')[0] == 400
    assert (
        post(
            jsonlib.dumps(
                {"enrollment_key": cast.enroll_key, "attrs": {"model": "x" * 81}}
            ).encode()
        )[0]
        == 400
    )


@pytest.mark.django_db(transaction=True)
def test_the_asgi_enrollment_path_is_throttled_like_the_api(cast, settings):
    """Daphne serves enrollment on the event loop, not through the REST view: the same
    per-address and per-key limits must hold there."""
    import asyncio
    import json as jsonlib

    from channels.testing import HttpCommunicator
    from django.core.cache import cache

    from walle_web.asgi import application

    cache.clear()
    rates = settings.WALLE_THROTTLE_RATES
    settings.WALLE_THROTTLE_RATES = {**rates, "enroll_address": "3/min", "enroll_key": "100/min"}

    def post(key: str) -> int:
        body = jsonlib.dumps({"enrollment_key": key, "attrs": {}}).encode()
        comm = HttpCommunicator(
            application,
            "POST",
            "/api/v1/devices/enroll/",
            body=body,
            headers=[(b"host", b"testserver"), (b"content-type", b"application/json")],
        )
        response = asyncio.run(comm.get_response(timeout=5))
        if response["status"] == 429:
            assert int(dict(response["headers"])[b"retry-after"]) >= 1
        return response["status"]

    assert [post(cast.enroll_key) for _ in range(4)] == [201, 201, 201, 429]
    settings.WALLE_THROTTLE_RATES = {**rates, "enroll_address": "100/min", "enroll_key": "2/min"}
    cache.clear()
    assert [post("wek_guess") for _ in range(3)] == [403, 403, 429]
