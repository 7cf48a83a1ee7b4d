"""Wave's usage counters: pulls, builds and mirrors counted per day, per organisation (the caller's e-mail
domain) and per architecture, as they happen.

Each event adds one to a counter for every combination of its day, org and architecture (7 keys, one Redis
round trip: a script INCRs them all). Per-day counters live `WAVE_METRICS_RETENTION_DAYS`; totals without a
day (per org, per architecture) never expire. An event without an e-mail counts under its day and architecture
only. Any other cache backend (the embedded file cache) counts through the sync cache API.
"""

from __future__ import annotations

import datetime
import itertools
import logging
import re
from enum import StrEnum

from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone
from django_redis.cache import RedisCache  # type: ignore[import-untyped]
from django_redis.exceptions import ConnectionInterrupted  # type: ignore[import-untyped]
from redis.exceptions import RedisError

from wave_site.cache import _async_redis, shared_cache

logger = logging.getLogger(__name__)

# One INCR per key; a key made by this event gets its expiry (ARGV[i] seconds, 0 = none) in the same step.
COUNT_ALL_SCRIPT = """
for i, key in ipairs(KEYS) do
  if redis.call('INCR', key) == 1 and tonumber(ARGV[i]) > 0 then redis.call('EXPIRE', key, ARGV[i]) end
end
return #KEYS
"""


ORG = re.compile(r"[a-z0-9][a-z0-9.-]{0,252}")  # an e-mail domain as the usage keys may hold it


class UsageKind(StrEnum):
    PULLS = "pulls"
    BUILDS = "builds"
    MIRRORS = "mirrors"


def org_of(email: str) -> str:
    """The organisation of a caller: their e-mail's domain, lower case ("" without one, or with anything but a
    host name's characters: any Tower may be named, and a `:` would forge another org's key)."""
    _local, at, domain = email.strip().rpartition("@")
    domain = domain.lower()
    return domain if at and _local and ORG.fullmatch(domain) else ""


def arch_of(platform: str) -> str:
    """`linux/amd64` -> amd64, `linux/arm64/v8` -> arm64 ("" when the platform names none)."""
    parts = platform.split("/")
    return parts[1].lower() if len(parts) > 1 else ""


def usage_key(kind: UsageKind, *, day: datetime.date | None = None, org: str = "", arch: str = "") -> str:
    parts = [f"wave:usage:{kind}"]
    if day is not None:
        parts.append(f"d:{day.isoformat()}")
    if org:
        parts.append(f"o:{org}")
    if arch:
        parts.append(f"a:{arch}")
    return ":".join(parts)


def _keys(kind: UsageKind, *, day: datetime.date, org: str, arch: str) -> list[tuple[str, int]]:
    """The counters one event adds to, each with its time to live (0 = none)."""
    ttl = settings.WAVE_METRICS_RETENTION_DAYS * 86400
    keys = []
    for use_day, use_org, use_arch in itertools.product((True, False), repeat=3):
        if (use_day, use_org, use_arch) == (False, False, False) or (use_org and not org) or (use_arch and not arch):
            continue
        key = usage_key(kind, day=day if use_day else None, org=org if use_org else "", arch=arch if use_arch else "")
        keys.append((key, ttl if use_day else 0))
    return keys


def _event(kind: UsageKind, email: str, platform: str) -> list[tuple[str, int]]:
    return _keys(kind, day=timezone.now().date(), org=org_of(email), arch=arch_of(platform))


def usage_count(*, kind: UsageKind, email: str, platform: str) -> None:
    """Count one `kind` event of a caller with `email`, on `platform`, today (UTC)."""
    keys = _event(kind, email, platform)
    cache = shared_cache()
    if isinstance(cache, RedisCache):
        client = cache.client.get_client(write=True)
        client.eval(COUNT_ALL_SCRIPT, len(keys), *[cache.client.make_key(k) for k, _ in keys], *[t for _, t in keys])
        return
    for key, ttl in keys:
        try:
            cache.incr(key)
        except ValueError:  # the counter's first event
            if not cache.add(key, 1, timeout=ttl or None):
                cache.incr(key)


async def usage_acount(*, kind: UsageKind, email: str, platform: str) -> None:
    """`usage_count` from the event loop: one Redis round trip and no thread hop with django-redis."""
    client = _async_redis()
    if client is None:
        await sync_to_async(usage_count, thread_sensitive=False)(kind=kind, email=email, platform=platform)
        return
    keys = _event(kind, email, platform)
    names = [client.codec.make_key(key) for key, _ in keys]
    await client.redis.execute("EVAL", COUNT_ALL_SCRIPT, len(keys), *names, *[ttl for _, ttl in keys])


def usage_count_quietly(*, kind: UsageKind, email: str, platform: str) -> None:
    """`usage_count` where a cache outage must not fail what was counted (a build already created): logged."""
    try:
        usage_count(kind=kind, email=email, platform=platform)
    except (RedisError, ConnectionInterrupted) as exc:
        logger.warning("%s not counted in the usage metrics: %s", kind, exc)


def usage_get(*, kind: UsageKind, day: datetime.date | None = None, org: str = "", arch: str = "") -> int:
    """The count of `kind` events on `day`, of `org`, on `arch` (the filters given); 0 when none happened."""
    value = shared_cache().get(usage_key(kind, day=day, org=org.lower(), arch=arch.lower()))
    return int(value) if value is not None else 0
