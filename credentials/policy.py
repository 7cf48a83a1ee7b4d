"""SSRF policy for every destination the service contacts on a client's behalf.

Owns the allow list (`WAVE_SSRF_ALLOW`) and the always-trusted own registries (build and cache
repositories); `registry.ssrf` holds the rules themselves (no Django).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings

from registry.endpoints import split_host_port
from registry.ssrf import DestinationRefusedError, address_check, check_destination
from wave_site.redact import redact_url

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def own_registries() -> list[str]:
    """Authorities of the service's own build and cache repositories: always trusted.

    A registry on loopback (the one `make run` starts, `localhost:5000`) is trusted under each loopback
    name on the same port, so that users may name it `127.0.0.1:5000` too; other local ports stay refused.
    """
    authorities: list[str] = []
    for repo in (settings.WAVE_BUILD_REPO, settings.WAVE_CACHE_REPO):
        if not repo:
            continue
        authority = repo.split("/", 1)[0].lower()
        host, port = split_host_port(authority)
        if host in LOOPBACK_HOSTS:
            suffix = f":{port}" if port is not None else ""
            aliases = [f"{name}{suffix}" for name in ("localhost", "127.0.0.1", "[::1]")]
        else:
            aliases = [authority]
        authorities += [alias for alias in aliases if alias not in authorities]
    return authorities


def destination_check(authority: str) -> None:
    """SSRF rules with this service's allow list and its own registries (raises DestinationRefusedError)."""
    check_destination(authority, allow=settings.WAVE_SSRF_ALLOW, trusted=own_registries())


def url_destination_check(url: str) -> None:
    """SSRF rules for a URL a client named (a layer location): its host and port, never its user info.

    A URL that does not parse (`http://[::1/x`, a port that is no number) is refused like a refused host.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        # The authority without its user info, as sent; redacted still, in case it is no authority at all.
        authority = redact_url(url.partition("://")[2].split("/", 1)[0].split("?", 1)[0].rpartition("@")[2])[:60]
        problem = "the port is invalid" if "port" in str(exc).lower() else "the host is invalid"
        raise DestinationRefusedError(authority, problem, can_be_allowed=False) from None
    if not parts.hostname:
        raise DestinationRefusedError(redact_url(url)[:60], "the URL names no host", can_be_allowed=False)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    destination_check(f"{host}:{port}" if port else host)


def connect_check(host: str, port: int, address: str) -> None:
    """The SSRF rules again at connect time, on the address actually contacted (defeats DNS rebinding)."""
    address_check(allow=settings.WAVE_SSRF_ALLOW, trusted=own_registries())(host, port, address)


def is_service_repository(repository: str) -> bool:
    """Whether a repository is (under) the service's build or cache repository: pushed with its own login."""
    repository = repository.lower().rstrip("/")
    for own in (settings.WAVE_BUILD_REPO, settings.WAVE_CACHE_REPO):
        if own and (repository == own.lower() or repository.startswith(own.lower().rstrip("/") + "/")):
            return True
    return False


def repository_host(repository: str) -> str:
    return repository.split("/", 1)[0].lower()
