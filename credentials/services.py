"""Registry access for the rest of the service: the configured upstream client."""

from __future__ import annotations

import functools
from urllib.parse import urlsplit

import httpx
from django.conf import settings

from credentials.static import static_credentials
from registry.client import DEFAULT_TIMEOUT, RegistryClient
from registry.ssrf import DestinationRefusedError, address_check, check_destination, guarded_transport
from wave_site.cache import shared_cache


def own_registries() -> list[str]:
    """Hosts of the service's own build and cache repositories: always trusted."""
    repos = [settings.WAVE_BUILD_REPO, settings.WAVE_CACHE_REPO]
    return [repo.split("/", 1)[0] for repo in repos if repo]


def destination_check(authority: str) -> None:
    """SSRF rules with this service's allow list and its own registries (raises DestinationRefusedError)."""
    check_destination(authority, allow=settings.WAVE_SSRF_ALLOW, trusted=own_registries())


def url_destination_check(url: str) -> None:
    """SSRF rules for a URL a client named (a layer location): its host and port, never its user info."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise DestinationRefusedError(parts.netloc, "the port is invalid") from None
    if not parts.hostname:
        raise DestinationRefusedError(url[:60], "the URL names no host")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    destination_check(f"{host}:{port}" if port else host)


def connect_check(host: str, port: int, address: str) -> None:
    """The SSRF rules again at connect time, on the address actually contacted (defeats DNS rebinding)."""
    address_check(allow=settings.WAVE_SSRF_ALLOW, trusted=own_registries())(host, port, address)


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
