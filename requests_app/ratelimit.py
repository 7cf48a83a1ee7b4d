"""Fixed-window rate limits in the shared cache (Redis): builds per hour, pulls per minute; their cache keys.

A window's counter is created with the window's lifetime and counted in one atomic step
(`wave_site.cache.cache_count`); pulls count from the event loop without a thread hop (`rate_limit_aacquire`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.conf import settings

from wave_site.cache import cache_acount, cache_count
from wave_site.errors import RateLimited


@dataclass(frozen=True)
class Limit:
    kind: str  # "build" or "pull"
    count: int  # 0 = unlimited
    window: int  # seconds
    unit: str


@dataclass(frozen=True)
class Window:
    """The window an event falls in: its counter's key and how long until it ends."""

    limit: Limit
    key: str
    start: int
    now: float

    @property
    def ttl(self) -> int:
        return self.limit.window + 5

    def check(self, used: int) -> None:
        """RateLimited once `used` events passed the limit."""
        if used <= self.limit.count:
            return
        retry_after = max(1, int(self.start + self.limit.window - self.now))
        kind, count, unit = self.limit.kind, self.limit.count, self.limit.unit
        raise RateLimited(
            f"Request exceeded {kind} rate limit of {count} per {unit} - retry in {retry_after} seconds",
            retry_after=retry_after,
        )


def limits() -> dict[str, Limit]:
    return {
        "build": Limit("build", settings.WAVE_RATE_LIMIT_BUILDS_PER_HOUR, 3600, "hour"),
        "pull": Limit("pull", settings.WAVE_RATE_LIMIT_PULLS_PER_MINUTE, 60, "minute"),
    }


def rate_limit_key(kind: str, key: str, window_start: int) -> str:
    return f"wave:ratelimit:{kind}:{key}:{window_start}"


def _window(kind: str, key: str, now: float | None) -> Window | None:
    """The current window of `kind` for `key`; None when `kind` is unlimited."""
    limit = limits()[kind]
    if limit.count <= 0:
        return None
    now = time.time() if now is None else now
    start = int(now // limit.window) * limit.window
    return Window(limit=limit, key=rate_limit_key(kind, key, start), start=start, now=now)


def rate_limit_acquire(*, kind: str, key: str, now: float | None = None) -> None:
    """Count one `kind` event for `key` (Tower user id or client IP); RateLimited past the limit."""
    window = _window(kind, key, now)
    if window is not None:
        window.check(cache_count(window.key, timeout=window.ttl))


async def rate_limit_aacquire(*, kind: str, key: str, now: float | None = None) -> None:
    """`rate_limit_acquire` from the event loop (no thread hop on Redis)."""
    window = _window(kind, key, now)
    if window is not None:
        window.check(await cache_acount(window.key, timeout=window.ttl))
