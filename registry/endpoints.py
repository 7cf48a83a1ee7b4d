"""Where a registry host is reached: its base URL and whether plain http is allowed."""

from __future__ import annotations

from collections.abc import Iterable

DOCKER_HUB = "docker.io"
DOCKER_HUB_ENDPOINT = "https://registry-1.docker.io"


def split_host_port(authority: str) -> tuple[str, int | None]:
    """`host[:port]` (IPv6 in brackets) into a lowercase host and an optional port."""
    authority = authority.strip().lower()
    if authority.startswith("["):
        host, _, rest = authority[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif authority.count(":") == 1:
        host, _, port = authority.partition(":")
    else:
        host, port = authority, ""
    return host, (int(port) if port.isascii() and port.isdigit() else None)


def is_insecure(authority: str, insecure: Iterable[str]) -> bool:
    """True when `authority` matches an insecure entry: `host` matches any port, `host:port` only that port."""
    host, port = split_host_port(authority)
    for entry in insecure:
        entry_host, entry_port = split_host_port(entry)
        if entry_host == host and (entry_port is None or entry_port == port):
            return True
    return False


def registry_base_url(authority: str, insecure: Iterable[str]) -> str:
    """The base URL of a registry's API: Docker Hub's endpoint, plain http for insecure hosts, else https."""
    if authority.lower() in {DOCKER_HUB, "index.docker.io", "registry-1.docker.io"}:
        return DOCKER_HUB_ENDPOINT
    scheme = "http" if is_insecure(authority, insecure) else "https"
    return f"{scheme}://{authority}"
