"""One cache handle per process for hot paths, counters, and async reads that take no thread hop on Redis.

`django.core.cache.cache` is a fresh backend object per request context under ASGI, and django-redis
then builds a new Redis client object for each: measurable on every request. The backends are
thread-safe, so hot paths (upstream checks, registry tokens, rate limits) share one handle.

Django's async cache API (`aget_many`...) is a thread hop per call, and django-redis has no async client.
With django-redis as the default cache, `cache_aget_many` and `cache_acount` talk to the same Redis through
`wave_site.redis_async` (one pipelined connection per event loop, the same server and socket timeouts), with
the backend's own key function and decoder, so they read exactly what the sync cache wrote. With any other
backend (the embedded file cache) they take one hop to a worker thread.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from asgiref.sync import sync_to_async
from django.core.cache import BaseCache, caches
from django.core.signals import setting_changed
from django.dispatch import receiver
from django_redis.cache import RedisCache  # type: ignore[import-untyped]

from wave_site.redis_async import AsyncRedis

# INCR and the window's expiry in one atomic step: a counter never outlives its window.
COUNT_SCRIPT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return count
"""


@functools.cache
def shared_cache() -> BaseCache:
    return caches.create_connection("default")


class _AsyncRedis:
    """The async client of one event loop for one django-redis backend."""

    def __init__(self, backend: RedisCache) -> None:
        self.backend = backend
        self.codec = backend.client  # django-redis's client: `make_key` and `decode`, no I/O
        options = self.codec._options
        self.redis = AsyncRedis(
            self.codec._server[0],
            connect_timeout=options.get("SOCKET_CONNECT_TIMEOUT"),
            timeout=options.get("SOCKET_TIMEOUT"),
        )


_async_clients: dict[asyncio.AbstractEventLoop, _AsyncRedis] = {}


def _async_redis() -> _AsyncRedis | None:
    """This event loop's client when the default cache is django-redis, else None."""
    backend = shared_cache()
    if not isinstance(backend, RedisCache):
        return None
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None or client.backend is not backend:
        for closed in [other for other in _async_clients if other.is_closed()]:
            del _async_clients[closed]
        if client is not None:  # the cache settings changed (tests): the old server's connection goes
            client.redis.close()
        client = _async_clients[loop] = _AsyncRedis(backend)
    return client


def cache_count(key: str, *, timeout: int) -> int:
    """Add one to the counter `key` (created with `timeout` seconds to live); its new value."""
    cache = shared_cache()
    if isinstance(cache, RedisCache):
        full_key = cache.client.make_key(key)
        return int(cache.client.get_client(write=True).eval(COUNT_SCRIPT, 1, full_key, timeout))
    try:
        return int(cache.incr(key))
    except ValueError:  # the window's first event
        return 1 if cache.add(key, 1, timeout=timeout) else int(cache.incr(key))


async def cache_acount(key: str, *, timeout: int) -> int:
    """`cache_count` from the event loop: one Redis round trip and no thread hop with django-redis."""
    client = _async_redis()
    if client is None:
        return await sync_to_async(cache_count, thread_sensitive=False)(key, timeout=timeout)
    return int(await client.redis.execute("EVAL", COUNT_SCRIPT, 1, client.codec.make_key(key), timeout))


async def cache_aget_many(keys: list[str]) -> dict[str, Any]:
    """`get_many` from the event loop: one MGET and no thread hop with django-redis; the values as the sync
    cache returns them (pickled objects and raw integers decoded by django-redis itself)."""
    client = _async_redis()
    if client is None:
        return await sync_to_async(shared_cache().get_many, thread_sensitive=False)(keys)
    if not keys:
        return {}
    values = await client.redis.execute("MGET", *[client.codec.make_key(key) for key in keys])
    return {key: client.codec.decode(value) for key, value in zip(keys, values, strict=True) if value is not None}


@receiver(setting_changed)
def _reset_on_settings_change(*, setting: str, **kwargs: object) -> None:
    if setting == "CACHES":
        shared_cache.cache_clear()
