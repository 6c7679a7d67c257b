"""Throttling: login lockout (django-axes), wrong API and device tokens, enrollment per key
and per address, device HTTP calls per device. Each answers 429 with a reason."""

from __future__ import annotations

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


def test_a_username_is_locked_out_after_repeated_wrong_passwords(cast, client, settings):
    settings.AXES_FAILURE_LIMIT = 5
    for _ in range(4):
        wrong = client.post("/login/", {"username": "otto", "password": "nope"})
        assert wrong.status_code == 200 and not wrong.wsgi_request.user.is_authenticated
    # The fifth failure locks the username out for this address.
    assert client.post("/login/", {"username": "otto", "password": "nope"}).status_code == 429
    right = client.post("/login/", {"username": "otto", "password": "pw-otto"})
    assert right.status_code == 429
    assert b"Too many failed logins" in right.content
    assert not right.wsgi_request.user.is_authenticated
    # Another user from the same address is not locked out by otto's failures.
    assert client.post("/login/", {"username": "vera", "password": "pw-vera"}).status_code == 302


def test_wrong_api_tokens_from_one_address_get_429_even_for_a_right_one(cast, settings):
    settings.WALLE_THROTTLE_RATES = {**settings.WALLE_THROTTLE_RATES, "auth_failure": "3/min"}
    good = Token.objects.create(user=cast.operator).key
    api = APIClient()
    for i in range(3):
        assert api.get("/api/v1/tasks/", HTTP_AUTHORIZATION=f"Token wrong{i}").status_code == 401
    throttled = api.get("/api/v1/tasks/", HTTP_AUTHORIZATION="Token wrong9")
    assert throttled.status_code == 429 and "Retry-After" in throttled.headers
    assert api.get("/api/v1/tasks/", HTTP_AUTHORIZATION=f"Token {good}").status_code == 429
    other = api.get("/api/v1/tasks/", HTTP_AUTHORIZATION=f"Token {good}", REMOTE_ADDR="10.0.0.9")
    assert other.status_code == 200


def test_api_calls_of_one_user_are_throttled(cast, settings):
    settings.WALLE_THROTTLE_RATES = {**settings.WALLE_THROTTLE_RATES, "user": "4/min"}
    api = cast.api("viewer")
    codes = [api.get("/api/v1/tasks/").status_code for _ in range(5)]
    assert codes == [200, 200, 200, 200, 429]


def test_enrollment_is_throttled_per_address_and_per_key(cast, settings):
    rates = settings.WALLE_THROTTLE_RATES
    settings.WALLE_THROTTLE_RATES = {**rates, "enroll_address": "3/min", "enroll_key": "5/min"}
    api = APIClient()

    def enroll(addr: str, key: str = cast.enroll_key) -> int:
        return api.post(
            "/api/v1/devices/enroll/", {"enrollment_key": key}, format="json", REMOTE_ADDR=addr
        ).status_code

    assert [enroll("10.0.0.1") for _ in range(4)] == [201, 201, 201, 429]
    # Wrong keys count against the address too.
    assert [enroll("10.0.0.2", "wek_guess") for _ in range(4)] == [403, 403, 403, 429]
    # The key's own budget of 5 (the four attempts above count): one more from elsewhere,
    # then 429 from any address.
    assert [enroll(f"10.0.1.{i}") for i in range(3)] == [201, 429, 429]


def test_device_http_calls_are_throttled_per_device(cast, settings):
    settings.WALLE_THROTTLE_RATES = {**settings.WALLE_THROTTLE_RATES, "device": "2/min"}
    token = cast.tokens[cast.devices[0].uid]
    api = APIClient()
    codes = [
        api.post(
            "/api/v1/tunnel/", {"items": []}, format="json", HTTP_AUTHORIZATION=f"Bearer {token}"
        ).status_code
        for _ in range(3)
    ]
    assert codes == [200, 200, 429]
    other = cast.tokens[cast.devices[1].uid]
    assert (
        api.post(
            "/api/v1/tunnel/", {"items": []}, format="json", HTTP_AUTHORIZATION=f"Bearer {other}"
        ).status_code
        == 200
    )
