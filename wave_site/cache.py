"""One cache handle per process for hot paths.

`django.core.cache.cache` is a fresh backend object per request context under ASGI, and django-redis
then builds a new Redis client object for each: measurable on every request. The backends are
thread-safe, so hot paths (upstream checks, registry tokens, rate limits) share one handle.
"""

from __future__ import annotations

import functools

from django.core.cache import BaseCache, caches
from django.core.signals import setting_changed
from django.dispatch import receiver


@functools.cache
def shared_cache() -> BaseCache:
    return caches.create_connection("default")


@receiver(setting_changed)
def _reset_on_settings_change(*, setting: str, **kwargs: object) -> None:
    if setting == "CACHES":
        shared_cache.cache_clear()
