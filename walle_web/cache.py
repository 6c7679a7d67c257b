"""Django's Redis cache, with one connection pool per process instead of one per context.

Django keeps cache backends in an asgiref `Local`: per thread, and under ASGI per asyncio
context. Code that reaches the cache from `asyncio.to_thread` (the enrollment handler's
throttles, devices/enroll.py) or from a sync view (each request runs in a copy of a context)
therefore gets a fresh backend each time, and Django's Redis backend keeps its connection
pools on the backend: every such call opened a new TCP connection to Redis and dropped it.
In the scale-out configuration, 28 % of the throttle threads' time during a 4,000-device
enrollment was spent opening connections (stack samples of the daphne), and 50 throttle
checks through `to_thread` opened 50 connections.

`RedisCache` here is the same backend whose client takes its pools from a process-wide
table, keyed by server and pool options. redis-py's pools are thread-safe and check the
process id, so a forked child does not reuse its parent's sockets.
"""

from __future__ import annotations

import threading

from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.core.cache.backends.redis import RedisCacheClient

_pools: dict[tuple[str, str], object] = {}
_pools_lock = threading.Lock()


class SharedPoolClient(RedisCacheClient):
    def _get_connection_pool(self, write):
        index = self._get_connection_pool_index(write)
        server = self._servers[index]
        key = (server, repr(sorted(self._pool_options.items(), key=lambda kv: kv[0])))
        pool = _pools.get(key)
        if pool is None:
            with _pools_lock:
                pool = _pools.get(key)
                if pool is None:
                    pool = _pools[key] = self._pool_class.from_url(server, **self._pool_options)
        return pool


class RedisCache(DjangoRedisCache):
    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = SharedPoolClient
