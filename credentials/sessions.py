"""Tower sessions: a caller's tokens kept (sealed) under the access token they first sent, and calls made with
them, so that a refresh made for one request serves every later one that arrives with the same old token.

`TowerContext` is what a container request (and the proxy, for its pulls) remembers of its caller: ids and
names only, no secret; the tokens are read from the `TowerAuth` row when a call needs them.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from django.conf import settings
from django.db import IntegrityError
from django.db.models import F, QuerySet
from django.utils import timezone

from credentials.callers import Caller
from credentials.models import CredentialLookup, TowerAuth
from credentials.pairing import pairing_key_current
from credentials.policy import connect_check, url_destination_check
from credentials.secrets import seal
from credentials.tower import (
    TowerClient,
    TowerForbidden,
    TowerNotFound,
    TowerTokens,
    TowerUnauthorized,
    TowerUnavailable,
    TowerUser,
)
from registry.ssrf import DestinationRefusedError, guarded_transport
from wave_site.cache import shared_cache
from wave_site.errors import OUTAGE_RETRY_AFTER, InvalidRequest, NotAuthenticated, TemporarilyUnavailable

T = TypeVar("T")
REFRESH_WAIT = 3.0  # seconds a refused refresh waits for another process's refresh to be stored
REFRESH_POLL = 0.1


@dataclass(frozen=True)
class TowerContext:
    """Where a caller's registry credentials live: their Tower session, endpoint and workspace."""

    auth_id: int
    endpoint: str
    workspace_id: int | None
    user_id: int | None = None
    user_name: str = ""

    @classmethod
    def of(
        cls, *, auth_id: int | None, endpoint: str, workspace_id: int | None, user_id: int | None, user_name: str
    ) -> TowerContext | None:
        """The context a stored row (a container request, a build) remembers; None when it came without a Tower
        session."""
        if auth_id is None:
            return None
        return cls(auth_id=auth_id, endpoint=endpoint, workspace_id=workspace_id, user_id=user_id, user_name=user_name)


@functools.cache
def tower_client() -> TowerClient:
    """One client per process; every connection is checked against the SSRF rules when it is made."""
    timeout = httpx.Timeout(settings.WAVE_TOWER_TIMEOUT, connect=min(5.0, settings.WAVE_TOWER_TIMEOUT))
    http = httpx.Client(transport=guarded_transport(connect_check), timeout=timeout, follow_redirects=False)
    return TowerClient(http=http, retries=settings.WAVE_TOWER_RETRIES, deadline=float(settings.WAVE_TOWER_TIMEOUT))


def session_key(*, endpoint: str, access_token: str) -> str:
    """A keyed hash naming (endpoint, original token): the row is found again, the token not learned from it."""
    message = f"{endpoint}\0{access_token}".encode()
    return hmac.new(settings.SECRETS_ENCRYPTION_KEY, message, hashlib.sha256).hexdigest()


def tower_session_find(*, endpoint: str, access_token: str, refresh_token: str = "") -> TowerAuth:
    """The stored session of this (endpoint, token), whose tokens may have been refreshed since (a newly sent
    refresh token is kept when none was stored); else a new one, not saved yet (`tower_session_save`)."""
    key = session_key(endpoint=endpoint, access_token=access_token)
    found = TowerAuth.objects.filter(key=key).first()
    if found is None:
        auth = TowerAuth(key=key, endpoint=endpoint)
        auth.set_tokens(access_token=access_token, refresh_token=refresh_token)
        return auth
    if refresh_token and not found.refresh_token_sealed:
        found.refresh_token_sealed = seal(refresh_token)
        TowerAuth.objects.filter(pk=found.pk).update(refresh_token_sealed=found.refresh_token_sealed)
    return found


def tower_session_save(auth: TowerAuth) -> TowerAuth:
    """Store a new session (its tokens as they are now); the stored one when a concurrent request won."""
    if not auth._state.adding:
        return auth
    try:
        auth.save(force_insert=True)
        return auth
    except IntegrityError:
        return TowerAuth.objects.get(key=auth.key)


def tower_session_open(*, endpoint: str, access_token: str, refresh_token: str = "") -> TowerAuth:
    """The session of this (endpoint, token), stored."""
    return tower_session_save(
        tower_session_find(endpoint=endpoint, access_token=access_token, refresh_token=refresh_token)
    )


def tower_session_call(auth: TowerAuth, call: Callable[[TowerTokens, Callable[[TowerTokens], None]], T]) -> T:
    """`call(tokens, on_refresh)` with the session's current tokens; a refresh is stored for later calls.

    Refresh tokens are single use: when another process refreshed first, our refresh is refused, so the
    call is made once more with the tokens that process stores (waited for briefly: it may still be storing).
    """
    tokens = TowerTokens(access_token=auth.access_token, refresh_token=auth.refresh_token)

    def store(refreshed: TowerTokens) -> None:
        auth.set_tokens(access_token=refreshed.access_token, refresh_token=refreshed.refresh_token)
        auth.refreshed_at, auth.refreshes = timezone.now(), auth.refreshes + 1  # a new session is saved with them
        if auth._state.adding:
            return
        TowerAuth.objects.filter(pk=auth.pk).update(
            access_token_sealed=auth.access_token_sealed,
            refresh_token_sealed=auth.refresh_token_sealed,
            refreshed_at=timezone.now(),
            refreshes=F("refreshes") + 1,
        )

    sent = tokens.access_token
    try:
        return call(tokens, store)
    except TowerUnauthorized:
        if not tokens.refresh_token:
            raise
        stored = _refreshed_elsewhere(auth, not_any_of={sent, tokens.access_token})
        if stored is None:
            raise
        auth.access_token_sealed, auth.refresh_token_sealed = stored.access_token_sealed, stored.refresh_token_sealed
        return call(TowerTokens(access_token=auth.access_token, refresh_token=auth.refresh_token), store)


def _refreshed_elsewhere(auth: TowerAuth, *, not_any_of: set[str]) -> TowerAuth | None:
    """The session as another process stored it after refreshing it (refresh tokens are single use: the one
    that refreshed first wins, and stores its new tokens a moment later); None when none shows up within
    REFRESH_WAIT seconds."""
    deadline = time.monotonic() + REFRESH_WAIT
    while True:
        stored = TowerAuth.objects.filter(key=auth.key).first()
        if stored is not None and stored.access_token not in not_any_of:
            return stored
        if time.monotonic() >= deadline:
            return None
        time.sleep(REFRESH_POLL)


def tower_user_identify(*, auth: TowerAuth) -> TowerUser:
    """Who the session belongs to (`/user-info`), remembered on the session row."""
    user = tower_session_call(
        auth, lambda tokens, store: tower_client().user_info(auth.endpoint, tokens, on_refresh=store)
    )
    if (auth.user_id, auth.user_name) != (user.id, user.user_name):
        auth.user_id, auth.user_name = user.id, user.user_name
        TowerAuth.objects.filter(pk=auth.pk).update(user_id=user.id, user_name=user.user_name)
    return user


def user_info_key(auth: TowerAuth) -> str:
    return f"wave:tower:user:{auth.key[:40]}"


def tower_caller_identify(
    *, ip: str | None, endpoint: str, workspace_id: int | None, access_token: str, refresh_token: str = ""
) -> tuple[Caller, TowerContext]:
    """The Tower user behind an access token, and the context their credentials are looked up in.

    The endpoint must have a pairing key and be one the service may contact (SSRF rules); `/user-info`
    identifies the user (remembered for WAVE_TOWER_CACHE_TTL seconds per session). Refused tokens are
    NotAuthenticated (401), an unreachable Tower TemporarilyUnavailable (503).
    """
    if pairing_key_current(endpoint=endpoint) is None:
        raise InvalidRequest(f"Missing pairing record for Tower endpoint '{endpoint}'")
    auth = tower_session_find(endpoint=endpoint, access_token=access_token, refresh_token=refresh_token)
    cached = shared_cache().get(user_info_key(auth)) if not auth._state.adding else None
    if isinstance(cached, TowerUser):
        user = cached
    else:
        user = _identify(auth)
        auth = tower_session_save(auth)  # only once Tower accepted the token: a refused one leaves nothing
        if settings.WAVE_TOWER_CACHE_TTL:
            shared_cache().set(user_info_key(auth), user, settings.WAVE_TOWER_CACHE_TTL)
    caller = Caller(ip=ip, user_id=user.id, user_name=user.user_name, email=user.email, tower_endpoint=endpoint)
    context = TowerContext(
        auth_id=auth.pk, endpoint=endpoint, workspace_id=workspace_id, user_id=user.id, user_name=user.user_name
    )
    return caller, context


def _identify(auth: TowerAuth) -> TowerUser:
    endpoint = auth.endpoint
    try:
        url_destination_check(endpoint)  # again at connect time, on the address contacted
        return tower_user_identify(auth=auth)
    except DestinationRefusedError as exc:
        raise InvalidRequest(f"Tower endpoint refused: {exc.message}") from None
    except (TowerUnauthorized, TowerForbidden):
        raise NotAuthenticated(f"Tower access token refused by '{endpoint}' - sign in to Tower again") from None
    except TowerNotFound:
        raise InvalidRequest(
            f"Tower endpoint '{endpoint}' does not answer /user-info - check 'towerEndpoint'"
        ) from None
    except TowerUnavailable as exc:
        raise TemporarilyUnavailable(exc.message, headers={"Retry-After": str(OUTAGE_RETRY_AFTER)}) from None


def tower_sessions_purge(*, created_before: dt.datetime, in_use: QuerySet[Any, Any]) -> tuple[int, int]:
    """Delete Tower sessions created before `created_before` that no row of `in_use` (a query of session ids)
    still needs, and credential lookups recorded before then; (sessions, lookups) deleted."""
    sessions, _ = TowerAuth.objects.filter(created_at__lt=created_before).exclude(pk__in=in_use).delete()
    lookups, _ = CredentialLookup.objects.filter(created_at__lt=created_before).delete()
    return sessions, lookups
