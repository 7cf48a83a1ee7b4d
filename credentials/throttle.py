"""Throttles of the open credentials endpoints (`/validate-creds`, `/pairing`): attempts counted in fixed windows
in the shared cache, by client network or by another subject (an account at a registry).

A client is counted by its address, an IPv6 client by its /64: one host commonly holds a whole /64, so counting
its addresses one by one would bound nothing.
"""

from __future__ import annotations

import hashlib
import ipaddress
import time

from wave_site.cache import cache_count

IPV6_CLIENT_PREFIX = 64


def client_network(address: str) -> str:
    """What a client is counted as: its IPv4 address (also when IPv4-mapped), its IPv6 /64, else the text given."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_CLIENT_PREFIX), strict=False))
    return str(ip)


def subject_digest(*parts: str) -> str:
    """A short, fixed-length name for a subject made of caller-given text (a registry and a user name), so that
    keys stay bounded and the text itself is not written into cache keys."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def throttle_hit(*, name: str, subject: str, limit: int, window: int, now: float | None = None) -> int:
    """Count one attempt of `subject` under `name` in the current window of `window` seconds: 0 while within
    `limit`, else the seconds until the window ends (at least 1), for `Retry-After`."""
    now = time.time() if now is None else now
    start = int(now // window) * window
    used = cache_count(f"wave:ratelimit:{name}:{subject}:{start}", timeout=window + 5)
    if used <= limit:
        return 0
    return max(1, int(start + window - now))
