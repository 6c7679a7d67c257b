"""The Redis cache of the scale-out configuration keeps its connections across threads and
asyncio contexts (walle_web/cache.py). Real Redis at 127.0.0.1:6379."""

from __future__ import annotations

import asyncio
import uuid

import pytest


@pytest.fixture
def redis_client():
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis at 127.0.0.1:6379: {exc}")
    return client


def connections_opened(client, work) -> int:
    before = client.info("stats")["total_connections_received"]
    work()
    return client.info("stats")["total_connections_received"] - before


def through_threads(calls: int) -> None:
    """What the enrollment handler does: the cache reached from asyncio.to_thread, each call
    in a copy of the caller's context (so Django hands it a backend of its own)."""
    from django.core.cache import caches

    def one(i: int) -> None:
        cache = caches["default"]
        cache.set(f"k{i}", i, timeout=30)
        assert cache.get(f"k{i}") == i

    async def main() -> None:
        for i in range(calls):
            await asyncio.to_thread(one, i)

    asyncio.run(main())


@pytest.mark.parametrize(
    "backend, most",
    [
        ("walle_web.cache.RedisCache", 3),
        # The stock backend, to show the test sees what it claims: a connection per call.
        ("django.core.cache.backends.redis.RedisCache", None),
    ],
)
def test_the_redis_cache_reuses_connections_across_contexts(settings, redis_client, backend, most):
    calls = 40
    settings.CACHES = {
        "default": {
            "BACKEND": backend,
            "LOCATION": "redis://127.0.0.1:6379/0",
            "KEY_PREFIX": f"t-{uuid.uuid4().hex}",
        }
    }
    opened = connections_opened(redis_client, lambda: through_threads(calls))
    if most is None:
        assert opened >= calls
    else:
        assert opened <= most


def test_backends_of_one_server_share_one_pool(redis_client):
    from walle_web.cache import RedisCache

    url = "redis://127.0.0.1:6379/0"
    a = RedisCache(url, {"KEY_PREFIX": "a"})
    b = RedisCache(url, {"KEY_PREFIX": "b"})
    other_db = RedisCache("redis://127.0.0.1:6379/1", {})
    pool = a._cache._get_connection_pool(write=True)
    assert b._cache._get_connection_pool(write=True) is pool
    assert other_db._cache._get_connection_pool(write=True) is not pool
    a.set("x", 1)
    b.set("x", 2)
    assert (a.get("x"), b.get("x")) == (1, 2)  # prefixes still apply per backend
