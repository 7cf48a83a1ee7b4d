"""Who asks: the caller of an API request, and the Tower endpoint their credentials live in."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

from credentials.throttle import client_network
from wave_site.errors import InvalidRequest
from wave_site.redact import redact_url

LEGACY_TOWER_ENDPOINT = "https://api.tower.nf"
CURRENT_TOWER_ENDPOINT = "https://api.cloud.seqera.io"


def tower_user_key(endpoint: str, user_id: int) -> str:
    """What rate limits and download caps count a Tower user by: their id *at their Tower*. Anyone may pair a
    Tower of their own, which may claim any id: ids of different endpoints never share a budget."""
    return f"user:{hashlib.sha256(endpoint.encode()).hexdigest()[:12]}:{user_id}"


@dataclass(frozen=True)
class Caller:
    """The client IP, and the Tower user when the request carried a Tower token that identified one."""

    ip: str | None
    user_id: int | None = None
    user_name: str = ""
    email: str = ""
    tower_endpoint: str = ""

    @property
    def rate_limit_key(self) -> str:
        if self.user_id is not None:
            return tower_user_key(self.tower_endpoint, self.user_id)
        return f"ip:{client_network(self.ip) if self.ip else 'unknown'}"  # an IPv6 client by its /64


def tower_endpoint_of(value: str | None) -> str:
    """The Tower endpoint a request names (the configured default otherwise): the API base URL as given,
    without a trailing `/`, the legacy host rewritten to its successor.

    InvalidRequest unless it is an http(s) URL with a host and nothing else but a path (no user info,
    query or fragment). Whether the service may contact it is the SSRF policy's call (credentials.policy).
    """
    endpoint = (value or settings.WAVE_TOWER_ENDPOINT).strip().rstrip("/")
    try:
        parts = urlsplit(endpoint)
        parts.port  # noqa: B018 - raises ValueError on a port that is no number
    except ValueError:
        parts = None
    if (
        parts is None
        or parts.scheme not in {"http", "https"}
        or not parts.hostname
        or "@" in parts.netloc
        or parts.query
        or parts.fragment
        or any(char.isspace() for char in endpoint)
    ):
        shown = redact_url(endpoint)[:200].replace("'", "")
        raise InvalidRequest(
            f"Invalid Tower endpoint '{shown}' - it must be an http(s) URL such as {CURRENT_TOWER_ENDPOINT}"
        )
    return CURRENT_TOWER_ENDPOINT if endpoint == LEGACY_TOWER_ENDPOINT else endpoint
