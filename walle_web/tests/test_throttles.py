"""Throttling: login lockout (django-axes), wrong API and device tokens, enrollment per key
and per address, device HTTP calls per device. Each answers 429 with a reason."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
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


# --- the sliding window itself, on both cache backends ------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["locmem", "redis"])
def throttle_cache(request):
    """The in-process cache, or a real Redis (127.0.0.1:6379) under a prefix of this test's own."""
    import uuid

    if request.param == "locmem":
        from django.core.cache.backends.locmem import LocMemCache

        yield LocMemCache(f"throttle-{uuid.uuid4().hex}", {})
        return
    import redis
    from django.core.cache.backends.redis import RedisCache

    try:
        redis.Redis(host="127.0.0.1", port=6379, socket_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis at 127.0.0.1:6379: {exc}")
    cache = RedisCache("redis://127.0.0.1:6379/0", {"KEY_PREFIX": f"t-{uuid.uuid4().hex}"})
    yield cache  # the keys expire on their own (two windows)


def caller(address: str):
    from rest_framework.request import Request
    from rest_framework.test import APIRequestFactory

    return Request(APIRequestFactory().get("/", REMOTE_ADDR=address))


def make_throttle(cache, clock, rate: str):
    from walle_web.rest import EnrollAddressThrottle

    class Throttle(EnrollAddressThrottle):
        pass

    Throttle.rate = rate
    Throttle.cache = cache
    Throttle.timer = clock
    return Throttle


def allowed(throttle_class, address: str, n: int) -> list[bool]:
    return [throttle_class().allow_request(caller(address), None) for _ in range(n)]


def test_the_limit_holds_within_a_window_and_per_caller(throttle_cache):
    clock = Clock(6000.0)  # the start of a minute window
    throttle = make_throttle(throttle_cache, clock, "10/min")
    assert allowed(throttle, "10.1.0.1", 12) == [True] * 10 + [False] * 2
    clock.now += 59
    assert allowed(throttle, "10.1.0.1", 1) == [False]
    refused = throttle()
    assert not refused.allow_request(caller("10.1.0.1"), None)
    assert 0 < refused.wait() <= 60
    # Another caller has a budget of its own.
    assert allowed(throttle, "10.1.0.2", 10) == [True] * 10


def test_the_window_slides_the_previous_minute_still_weighs(throttle_cache):
    clock = Clock(6000.0)
    throttle = make_throttle(throttle_cache, clock, "10/min")
    assert allowed(throttle, "10.1.0.3", 10) == [True] * 10
    # Half-way through the next minute the last one still counts for half: 5 left, not 10.
    clock.now = 6090.0
    assert allowed(throttle, "10.1.0.3", 6) == [True] * 5 + [False]
    # Two minutes on, the burst has left the window.
    clock.now = 6200.0
    assert allowed(throttle, "10.1.0.3", 10) == [True] * 10


def test_a_burst_at_a_window_edge_does_not_double_the_rate(throttle_cache):
    clock = Clock(6059.0)  # the last second of a window
    throttle = make_throttle(throttle_cache, clock, "10/min")
    assert allowed(throttle, "10.1.0.4", 10) == [True] * 10
    clock.now = 6061.0  # one second into the next: the burst still counts whole (59/60, up)
    assert allowed(throttle, "10.1.0.4", 2) == [False, False]
    clock.now = 6066.0  # 6 s in: it weighs 54/60 of 10 = 9, room for exactly one
    assert allowed(throttle, "10.1.0.4", 2) == [True, False]


@hsettings(max_examples=300, deadline=None)
@given(
    start=st.floats(min_value=0, max_value=119.999),
    limit=st.integers(min_value=1, max_value=20),
    spread=st.floats(min_value=0, max_value=5),
)
def test_a_burst_of_limit_plus_one_is_refused_wherever_it_falls(start, limit, spread):
    """limit + 1 requests within a few seconds: the last is refused whether or not a window
    edge falls among them (the edge once let it through: the previous window's share was
    just under the limit). The wait it is given is the truth: one second earlier it is
    still refused, at the wait it is let through."""
    from django.core.cache.backends.locmem import LocMemCache

    cache = LocMemCache(f"burst-{uuid.uuid4().hex}", {})
    clock = Clock(60_000.0 + start)
    throttle = make_throttle(cache, clock, f"{limit}/min")
    step = spread / limit
    for _ in range(limit):
        assert allowed(throttle, "10.3.0.1", 1) == [True]
        clock.now += step
    refused = throttle()
    assert not refused.allow_request(caller("10.3.0.1"), None)
    wait = refused.wait()
    assert 0 < wait <= 120
    if wait > 1:
        clock.now += wait - 1
        assert allowed(throttle, "10.3.0.1", 1) == [False]
        clock.now += 1
    else:
        clock.now += wait
    clock.now += 1e-6
    assert allowed(throttle, "10.3.0.1", 1) == [True]


def test_concurrent_requests_never_get_more_than_the_limit(throttle_cache):
    # Many requests of one caller at once: each reads the counters while the others are in
    # flight, so a read-then-count throttle lets most of them through. Exactly the limit may
    # pass, whatever the interleaving, and the refused ones leave the count at the limit.
    import threading

    clock = Clock(12_000.0)
    throttle = make_throttle(throttle_cache, clock, "10/min")
    for round_ in range(5):
        address = f"10.2.0.{round_}"
        start = threading.Barrier(40)
        results: list[bool] = []

        def call(address=address, start=start, results=results) -> None:
            request = caller(address)
            start.wait()
            results.append(throttle().allow_request(request, None))

        threads = [threading.Thread(target=call) for _ in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results.count(True) == 10, (address, results.count(True))
        assert allowed(throttle, address, 1) == [False]
