"""Registry access for the rest of the service: the configured upstream client."""

from __future__ import annotations

import functools

from django.conf import settings

from credentials.static import static_credentials
from registry.client import RegistryClient
from registry.ssrf import check_destination
from wave_site.cache import shared_cache


def own_registries() -> list[str]:
    """Hosts of the service's own build and cache repositories: always trusted."""
    repos = [settings.WAVE_BUILD_REPO, settings.WAVE_CACHE_REPO]
    return [repo.split("/", 1)[0] for repo in repos if repo]


def destination_check(authority: str) -> None:
    """SSRF rules with this service's allow list and its own registries (raises DestinationRefusedError)."""
    check_destination(authority, allow=settings.WAVE_SSRF_ALLOW, trusted=own_registries())


@functools.cache
def registry_client() -> RegistryClient:
    """One client per process: connections are reused, tokens are shared through the cache."""
    return RegistryClient(
        insecure=settings.WAVE_INSECURE_REGISTRIES,
        credentials=static_credentials,
        cache=shared_cache(),
        check_destination=destination_check,
    )
