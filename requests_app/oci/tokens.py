"""What a token authorises (`ProxyTarget`): its resolution, its one check, its revocation mark, and the
cache keys of token data.

A target is cached for a few seconds. Revocation writes a mark that outlives any cached copy, and
every lookup reads the mark in the same round trip as the target, so a revoked token stops working at
once on any cache backend (Redis or the embedded file cache).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from credentials.callers import tower_user_key
from credentials.clients import registry_client_with
from credentials.sessions import TowerContext
from credentials.throttle import client_network
from registry.augment import ContainerConfig, InjectedLayerRef
from registry.client import RegistryClient
from registry.reference import parse_image
from requests_app.models import ContainerRequest
from requests_app.oci.errors import ImageNameMismatch, TokenUnknown
from wave_site.cache import cache_aget_many, shared_cache

TOKEN = re.compile(r"[0-9a-f]{12}")
TOKEN_CACHE_TTL = 30


def target_key(token: str) -> str:
    return f"wave:token:{token}"


def revoked_key(token: str) -> str:
    return f"wave:revoked:{token}"


@dataclass(frozen=True)
class ProxyTarget:
    """What a token authorises, cached briefly; layer states are read from the database when needed."""

    pk: int
    token: str
    registry: str
    repository: str
    source_version: str
    platform: str
    expires_at: float
    config: ContainerConfig
    layer_digests: frozenset[str]
    tower: TowerContext | None = None  # the caller's Tower session: upstream calls use their credentials
    build_id: str = ""  # the build that makes the image: pulls wait for it
    user_email: str = ""  # the requester's: pulls count toward their organisation (wave_site.metrics.usage)

    @property
    def is_augmented(self) -> bool:
        return not self.config.is_empty

    def rate_limit_key(self, ip: str | None) -> str:
        """Pulls count against the Tower user who asked for the container, else the pulling address."""
        if self.tower is not None and self.tower.user_id is not None:
            return tower_user_key(self.tower.endpoint, self.tower.user_id)
        return f"ip:{client_network(ip) if ip else 'unknown'}"


def _target_from(request: ContainerRequest) -> ProxyTarget:
    ref = parse_image(request.source_image)
    stored = request.container_config or {}
    layers = list(request.layers.all())
    config = ContainerConfig(
        entrypoint=stored.get("entrypoint"),
        cmd=stored.get("cmd"),
        env=tuple(stored.get("env") or ()),
        working_dir=stored.get("workingDir"),
        layers=tuple(InjectedLayerRef(la.gzip_digest, la.gzip_size, la.tar_digest) for la in layers),
    )
    return ProxyTarget(
        pk=request.pk,
        token=request.token,
        registry=ref.registry,
        repository=ref.repository,
        source_version=ref.version,
        platform=request.platform,
        expires_at=request.expires_at.timestamp(),
        config=config,
        layer_digests=frozenset(la.gzip_digest for la in layers),
        tower=TowerContext.of(
            auth_id=request.tower_auth_id,
            endpoint=request.tower_endpoint,
            workspace_id=request.tower_workspace_id,
            user_id=request.user_id,
            user_name=request.user_name,
        ),
        build_id=request.build_id,
        user_email=request.user_email,
    )


def check_target(target: ProxyTarget | None, *, token: str, name: str, is_revoked: bool) -> ProxyTarget:
    """The one check of a pull: the token is known, neither revoked nor expired, and `name` is its image."""
    if target is None or is_revoked or target.expires_at <= time.time():
        raise TokenUnknown(token)
    if name != target.repository:
        raise ImageNameMismatch(name, token)
    return target


def _lookup_keys(token: str, also: tuple[str, ...]) -> list[str]:
    if not TOKEN.fullmatch(token):
        raise TokenUnknown(token)
    return [target_key(token), revoked_key(token), *also]


def _checked_from(found: dict[str, Any], token: str, name: str) -> ProxyTarget | None:
    """The target among `found` (read with `_lookup_keys`), checked; None when it was not cached."""
    target = found.get(target_key(token))
    is_revoked = revoked_key(token) in found
    if not isinstance(target, ProxyTarget):
        if not is_revoked:
            return None
        target = None
    return check_target(target, token=token, name=name, is_revoked=is_revoked)


def cached_target(token: str, name: str, *also: str) -> tuple[ProxyTarget | None, dict[str, Any]]:
    """The token's cached target, checked (None when not cached), and the cache entries named by `also`,
    all read in one round trip (the hot path of a pull)."""
    found: dict[str, Any] = shared_cache().get_many(_lookup_keys(token, also))
    return _checked_from(found, token, name), found


async def acached_target(token: str, name: str, *also: str) -> tuple[ProxyTarget | None, dict[str, Any]]:
    """`cached_target` from the event loop: no thread hop on Redis."""
    found = await cache_aget_many(_lookup_keys(token, also))
    return _checked_from(found, token, name), found


def resolve_token(token: str, name: str) -> ProxyTarget:
    """The checked target of a token: from the cache, else from the database (then cached)."""
    target, _ = cached_target(token, name)
    return target if target is not None else load_target(token, name)


def load_target(token: str, name: str) -> ProxyTarget:
    """The checked target of a token from the database (then cached): after `cached_target` missed."""
    request = ContainerRequest.objects.filter(token=token, revoked_at__isnull=True).prefetch_related("layers").first()
    target = _target_from(request) if request is not None else None
    is_revoked = shared_cache().get(revoked_key(token)) is not None  # a revocation may have landed meanwhile
    if target is not None and not is_revoked:
        shared_cache().set(target_key(token), target, TOKEN_CACHE_TTL)
    return check_target(target, token=token, name=name, is_revoked=is_revoked)


def registry_client_for(target: ProxyTarget) -> RegistryClient:
    """The client that pulls a target's image: with the caller's own (Tower) credentials when the request
    came with a Tower session, else (and for images the service built) the service's; one connection pool and
    token cache either way."""
    return registry_client_with(None if target.build_id else target.tower)  # a built image is the service's


def token_mark_revoked(*, token: str) -> None:
    """No process serves the token again, whatever it cached (written before the database says revoked)."""
    shared_cache().set(revoked_key(token), 1, settings.WAVE_TOKEN_TTL)
    shared_cache().delete(target_key(token))
