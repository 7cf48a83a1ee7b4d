"""SSRF policy for every destination the service contacts on a client's behalf.

Owns the allow list (`WAVE_SSRF_ALLOW`) and the always-trusted own registries (build and cache
repositories); `registry.ssrf` holds the rules themselves (no Django).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings

from registry.ssrf import DestinationRefusedError, address_check, check_destination


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
