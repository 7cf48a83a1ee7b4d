"""Fixed-window rate limits in the shared cache (Redis): builds per hour, pulls per minute; their cache keys."""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.conf import settings

from wave_site.cache import shared_cache
from wave_site.errors import TooManyRequests


@dataclass(frozen=True)
class Limit:
    kind: str  # "build" or "pull"
    count: int  # 0 = unlimited
    window: int  # seconds
    unit: str


def limits() -> dict[str, Limit]:
    return {
        "build": Limit("build", settings.WAVE_RATE_LIMIT_BUILDS_PER_HOUR, 3600, "hour"),
        "pull": Limit("pull", settings.WAVE_RATE_LIMIT_PULLS_PER_MINUTE, 60, "minute"),
    }


def rate_limit_key(kind: str, key: str, window_start: int) -> str:
    return f"wave:ratelimit:{kind}:{key}:{window_start}"


def rate_limit_acquire(*, kind: str, key: str, now: float | None = None) -> None:
    """Count one `kind` event for `key` (Tower user id or client IP); TooManyRequests past the limit."""
    limit = limits()[kind]
    if limit.count <= 0:
        return
    now = time.time() if now is None else now
    window_start = int(now // limit.window) * limit.window
    cache_key = rate_limit_key(kind, key, window_start)
    cache = shared_cache()
    try:
        used = cache.incr(cache_key)  # one round trip once the window has its counter
    except ValueError:  # the window's first event
        used = 1 if cache.add(cache_key, 1, timeout=limit.window + 5) else cache.incr(cache_key)
    if used > limit.count:
        retry_after = max(1, int(window_start + limit.window - now))
        raise TooManyRequests(
            f"Request exceeded {kind} rate limit of {limit.count} per {limit.unit} - retry in {retry_after} seconds",
            retry_after=retry_after,
        )
