"""Who asks: the caller of an API request, and the Tower endpoint their credentials live in."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

LEGACY_TOWER_ENDPOINT = "https://api.tower.nf"
CURRENT_TOWER_ENDPOINT = "https://api.cloud.seqera.io"


@dataclass(frozen=True)
class Caller:
    """The client IP, and the Tower user once the credentials issue identifies one."""

    ip: str | None
    user_id: int | None = None
    user_name: str = ""

    @property
    def rate_limit_key(self) -> str:
        return f"user:{self.user_id}" if self.user_id is not None else f"ip:{self.ip or 'unknown'}"


def tower_endpoint_of(value: str | None) -> str:
    """The Tower endpoint a request names (the configured default otherwise), legacy host rewritten."""
    endpoint = (value or settings.WAVE_TOWER_ENDPOINT).rstrip("/")
    return CURRENT_TOWER_ENDPOINT if endpoint == LEGACY_TOWER_ENDPOINT else endpoint
