"""A Tower user's credentials for one registry: looked up in their workspace, decrypted, cached (sealed).

The first `container-reg` entry whose registry is the image's registry (an entry without one is Docker Hub)
is fetched from `/credentials/{id}/keys` for the endpoint's pairing key and decrypted. Every lookup that
reaches Tower is recorded as a `CredentialLookup` row (no secret); its answer, found or not, is cached for
WAVE_TOWER_CACHE_TTL seconds, sealed, under a key naming the session, workspace and registry.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone

from credentials.models import CredentialLookup, PairingKey, TowerAuth
from credentials.packets import ContainerRegistryKeys, PacketError, keys_parse
from credentials.pairing import pairing_key_decrypt
from credentials.secrets import seal, unseal
from credentials.sessions import TowerContext, tower_client, tower_session_call
from credentials.tower import (
    RefreshHook,
    TowerCredentials,
    TowerError,
    TowerForbidden,
    TowerNotFound,
    TowerTokens,
    TowerUnavailable,
)
from registry.client import Credentials
from wave_site.cache import shared_cache

logger = logging.getLogger(__name__)

CONTAINER_REGISTRY = "container-reg"
MAX_PAIRINGS_TRIED = 3
DOCKER_HUB = "docker.io"
DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"})


class CredentialsLookupError(TowerError):
    """The lookup failed; `message` says why, safe to show to the caller."""


class CredentialsRefused(CredentialsLookupError):
    """Tower refused (token, workspace), or the answer cannot be used (no pairing, a packet that does not
    decrypt, credentials of another kind): asking again will not help."""


class CredentialsUnavailable(CredentialsLookupError):
    """Tower is unreachable or failing: worth retrying later."""


def missing_pairing_message(endpoint: str) -> str:
    return f"Missing pairing record for Tower endpoint '{endpoint}'"


def registry_host(value: str | None) -> str:
    """A registry as Tower or an image names it, comparable: lower case, no scheme or path, Hub aliases as
    `docker.io` (absent is Docker Hub)."""
    if not value:
        return DOCKER_HUB
    host = value.strip().lower().split("://", 1)[-1].split("/", 1)[0]
    return DOCKER_HUB if host in DOCKER_HUB_ALIASES else host


def lookup_key(context: TowerContext, registry: str) -> str:
    who = f"{context.auth_id}\0{context.endpoint}\0{context.workspace_id}\0{registry}".encode()
    digest = hmac.new(settings.SECRETS_ENCRYPTION_KEY, who, hashlib.sha256).hexdigest()[:40]
    return f"wave:tower:credentials:{digest}"


@dataclass(frozen=True)
class Found:
    credentials_id: str
    credentials: Credentials | None


def tower_registry_credentials(*, context: TowerContext, registry: str) -> Credentials | None:
    """The caller's credentials for `registry` from Tower (None: they have none for it); cached briefly.

    CredentialsLookupError when Tower cannot say (the caller gets that message; nothing is cached).
    """
    registry = registry_host(registry)
    key = lookup_key(context, registry)
    cached = shared_cache().get(key)
    if isinstance(cached, str):
        entry = json.loads(unseal(cached))
        if not entry.get("username"):
            return None
        return Credentials(username=entry["username"], password=entry["password"])
    found = _look_up(context, registry)
    credentials = found.credentials
    entry = {"username": credentials.username, "password": credentials.password} if credentials else {}
    if settings.WAVE_TOWER_CACHE_TTL:
        shared_cache().set(key, seal(json.dumps(entry)), settings.WAVE_TOWER_CACHE_TTL)
    return credentials


def _look_up(context: TowerContext, registry: str) -> Found:
    started = time.monotonic()
    record = CredentialLookup(
        endpoint=context.endpoint, workspace_id=context.workspace_id, user_id=context.user_id,
        user_name=context.user_name, registry=registry,
    )  # fmt: skip
    try:
        found = _fetch(context, registry)
    except (TowerError, PacketError) as exc:
        message = exc.message if isinstance(exc, TowerError) else f"Tower credentials keys are unusable: {exc}"
        record.outcome, record.error = CredentialLookup.Outcome.ERROR, message
        _record(record, started)
        logger.warning("Tower credentials lookup for %s failed: %s", registry, message)
        kind = CredentialsUnavailable if isinstance(exc, TowerUnavailable) else CredentialsRefused
        raise kind(message) from None
    record.credentials_id = found.credentials_id[:64]
    record.outcome = CredentialLookup.Outcome.FOUND if found.credentials else CredentialLookup.Outcome.NOT_FOUND
    _record(record, started)
    return found


def _record(record: CredentialLookup, started: float) -> None:
    record.duration_ms = int((time.monotonic() - started) * 1000)
    record.save()


def _fetch(context: TowerContext, registry: str) -> Found:
    auth = TowerAuth.objects.filter(pk=context.auth_id).first()
    if auth is None:
        raise CredentialsRefused("The Tower session of this request is gone")
    client = tower_client()
    try:
        entries = tower_session_call(
            auth,
            lambda tokens, store: client.list_credentials(
                context.endpoint, tokens, workspace_id=context.workspace_id, on_refresh=store
            ),
        )
    except TowerForbidden:
        where = f"workspace {context.workspace_id}" if context.workspace_id is not None else "the personal workspace"
        raise CredentialsRefused(f"Tower user '{context.user_name}' may not read the credentials of {where}") from None
    match = _first_match(entries, registry)
    if match is None:
        return Found(credentials_id="", credentials=None)
    pairings = pairing_keys_usable(endpoint=context.endpoint)
    if not pairings:
        raise CredentialsRefused(missing_pairing_message(context.endpoint))
    for position, pairing in enumerate(pairings):

        def keys(tokens: TowerTokens, store: RefreshHook, pairing_id: int = pairing.pairing_id) -> str:
            return client.credential_keys(
                context.endpoint, tokens, credentials_id=match.id, pairing_id=pairing_id,
                workspace_id=context.workspace_id, on_refresh=store,
            )  # fmt: skip

        try:
            packet = tower_session_call(auth, keys)
            break
        except TowerError as exc:
            # Tower knows another pair than the newest (someone paired its endpoint since the lease ended, and
            # Tower has not paired again yet): the older pairs still decrypt until they are retired.
            if position == len(pairings) - 1 or not is_pairing_refused(exc):
                raise
    parsed = keys_parse(_decrypt(pairing, packet))
    if not isinstance(parsed, ContainerRegistryKeys):
        raise CredentialsRefused(f"Tower credentials '{match.name}' are not container registry credentials")
    return Found(credentials_id=match.id, credentials=Credentials(username=parsed.user_name, password=parsed.password))


def pairing_keys_usable(*, endpoint: str) -> list[PairingKey]:
    """The pairs of `endpoint` that still decrypt, newest first (at most MAX_PAIRINGS_TRIED)."""
    usable = PairingKey.objects.filter(service="tower", endpoint=endpoint, retired_at__gt=timezone.now())
    return list(usable.order_by("-created_at")[:MAX_PAIRINGS_TRIED])


def is_pairing_refused(exc: TowerError) -> bool:
    """Tower answered that it does not know the pairing sent (a 400 or 404 to the keys call)."""
    return isinstance(exc, TowerNotFound) or (isinstance(exc, TowerUnavailable) and " answered 400 " in exc.message)


def _decrypt(pairing: PairingKey, packet: str) -> bytes:
    return pairing_key_decrypt(key=pairing, packet=packet)


def _first_match(entries: list[TowerCredentials], registry: str) -> TowerCredentials | None:
    for entry in entries:
        if entry.provider == CONTAINER_REGISTRY and registry_host(entry.registry) == registry:
            return entry
    return None
