"""Construction of the clients that reach registries: one per process, sharing connections and tokens.

A caller with credentials of their own (Tower) pulls through `registry_client().for_credentials(lookup)`:
a view of the same client, so no connection pool or token cache is built per request.
"""

from __future__ import annotations

import functools

import httpx
from django.conf import settings

from credentials.policy import connect_check, destination_check
from credentials.static import static_credentials
from registry.client import DEFAULT_TIMEOUT, RegistryClient
from registry.ssrf import guarded_transport
from wave_site.cache import shared_cache


@functools.cache
def registry_client() -> RegistryClient:
    """One client per process: connections are reused, tokens are shared through the cache."""
    return RegistryClient(
        http=httpx.Client(transport=guarded_transport(connect_check), timeout=DEFAULT_TIMEOUT, follow_redirects=False),
        insecure=settings.WAVE_INSECURE_REGISTRIES,
        credentials=static_credentials,
        cache=shared_cache(),
        check_destination=destination_check,
        fingerprint_key=settings.SECRETS_ENCRYPTION_KEY,
    )
