"""Construction of the clients that reach registries: one per process, sharing connections and tokens.

A caller with credentials of their own (Tower) pulls through `registry_client().for_credentials(lookup)`:
a view of the same client, so no connection pool or token cache is built per request. Registry tokens obtained
with credentials (a caller's or the service's) are sealed in the cache like every other secret at rest.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import httpx
from cryptography.fernet import InvalidToken
from django.conf import settings

from credentials.lookups import CredentialsRefused, CredentialsUnavailable, tower_registry_credentials
from credentials.policy import connect_check, destination_check, repository_host
from credentials.provider import credentials_lookup, service_credentials
from credentials.secrets import seal, unseal
from credentials.sessions import TowerContext
from registry.client import (
    DEFAULT_TIMEOUT,
    ManifestUnknownError,
    RegistryClient,
    RegistryDeniedError,
    RegistryError,
    RegistryUnauthorizedError,
)
from registry.ssrf import DestinationRefusedError, guarded_transport
from wave_site.cache import shared_cache
from wave_site.errors import OUTAGE_RETRY_AFTER, InvalidRequest, TemporarilyUnavailable
from wave_site.redact import redact_url


@functools.cache
def registry_client() -> RegistryClient:
    """One client per process: connections are reused, tokens are shared through the cache."""
    return RegistryClient(
        http=httpx.Client(transport=guarded_transport(connect_check), timeout=DEFAULT_TIMEOUT, follow_redirects=False),
        insecure=settings.WAVE_INSECURE_REGISTRIES,
        credentials=service_credentials,
        cache=shared_cache(),
        check_destination=destination_check,
        fingerprint_key=settings.SECRETS_ENCRYPTION_KEY,
        seal=seal,
        unseal=token_unseal,
    )


@functools.lru_cache(maxsize=1024)
def token_unseal(sealed: str) -> str | None:
    """A cached registry token, or None when it does not unseal (sealed under another key, or garbage): a miss.

    Remembered per sealed value: a blob pull asks for its token every time, and unsealing costs ~25 us."""
    try:
        return unseal(sealed)
    except InvalidToken:
        return None


def registry_client_with(tower: TowerContext | None) -> RegistryClient:
    """The client that pulls for a caller: with their Tower credentials when they have a Tower session (the
    service's own for its build and cache repositories), else with the service's; one pool either way."""
    if tower is None:
        return registry_client()
    return registry_client().for_credentials(credentials_lookup(tower))


@contextlib.contextmanager
def registry_errors_answered(shown_name: str) -> Iterator[None]:
    """Failures reaching an image as the API client reads them: a refused host or an image that is missing or
    not readable with the caller's credentials is a 400, an unreachable registry (or Tower) a 503 with
    `Retry-After`, as the service's own outages answer."""
    try:
        yield
    except DestinationRefusedError as exc:
        raise InvalidRequest(exc.message) from None
    except CredentialsUnavailable as exc:
        raise TemporarilyUnavailable(exc.message, headers={"Retry-After": str(OUTAGE_RETRY_AFTER)}) from None
    except CredentialsRefused as exc:
        raise InvalidRequest(exc.message) from None
    except (ManifestUnknownError, RegistryUnauthorizedError, RegistryDeniedError):
        raise InvalidRequest(f"Container image '{shown_name}' does not exist or access is not authorized") from None
    except RegistryError as exc:
        raise TemporarilyUnavailable(exc.message, headers={"Retry-After": str(OUTAGE_RETRY_AFTER)}) from None


def push_login_check(repository: str, *, tower: TowerContext, purpose: str) -> None:
    """The caller's Tower account has a login for the repository's registry, and the registry accepts it
    (InvalidRequest saying which is missing; `purpose` completes "add them to ...")."""
    host = repository_host(repository)
    shown = redact_url(repository)
    with registry_errors_answered(shown):
        credentials = tower_registry_credentials(context=tower, registry=host)
        if credentials is None:
            raise InvalidRequest(
                f"Container build repository '{shown}': no credentials for registry '{host}' in your Tower account "
                f"- add them to {purpose}"
            )
        is_valid = registry_client().login(host, credentials)
    if not is_valid:
        raise InvalidRequest(
            f"Container build repository '{shown}': registry '{host}' refuses the credentials of your Tower account"
        )
