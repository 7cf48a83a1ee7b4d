"""Server-side request forgery rules for every destination a client's request names.

After DNS resolution, loopback, private, link-local (cloud metadata included), unique-local, multicast,
reserved and unspecified addresses are refused, unless the host is explicitly allowed. Unresolvable
hosts fail closed.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from typing import Any

import anyio
import httpcore
import httpx

from registry.endpoints import split_host_port

METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata", "instance-data"})


class DestinationRefusedError(Exception):
    """A refused destination; the message names the way out (`WAVE_SSRF_ALLOW`) when allowing the host would help."""

    def __init__(self, host: str, reason: str, *, can_be_allowed: bool = True) -> None:
        hint = f" (set WAVE_SSRF_ALLOW={host} to allow it)" if can_be_allowed else ""
        super().__init__(f"Destination '{host}' is not allowed: {reason}{hint}")
        self.host = host
        self.message = str(self)


UNRESOLVABLE = "the host name does not resolve (check its spelling)"


def _is_public(address: str) -> bool:
    """Globally routable, after unwrapping IPv4 addresses carried inside IPv6 (mapped, 6to4, Teredo)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        nat64 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in ipaddress.ip_network("64:ff9b::/96") else None
        for embedded in (ip.ipv4_mapped, ip.sixtofour, ip.teredo[1] if ip.teredo else None, nat64):
            if embedded is not None and not _is_public(str(embedded)):
                return False
        if ip.sixtofour is not None or ip.teredo is not None:
            return True
    return ip.is_global and not ip.is_multicast


def check_destination(authority: str, *, allow: Iterable[str] = (), trusted: Iterable[str] = ()) -> None:
    """Raise DestinationRefusedError unless `authority` (`host[:port]`) may be contacted.

    `allow` lists host names or IPs allowed on any port; `trusted` lists authorities (the service's own
    registries) allowed as written.
    """
    host, _ = split_host_port(authority)
    if authority.lower() in {t.lower() for t in trusted}:
        return
    if host in {entry.strip().lower() for entry in allow}:
        return
    if host in METADATA_HOSTS:
        raise DestinationRefusedError(host, "cloud metadata service")
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        raise DestinationRefusedError(host, UNRESOLVABLE, can_be_allowed=False) from None
    for info in infos:
        address = str(info[4][0])
        if not _is_public(address):
            raise DestinationRefusedError(host, "it resolves to a private or local address")


# --- Enforcement at connect time ----------------------------------------------------------------------
# `check_destination` answers before a request; DNS may answer differently a moment later (rebinding).
# These network backends resolve once, check every address, and connect to the checked address, so
# that what was checked is what is contacted. TLS still verifies the certificate against the host name.

AddressCheck = Callable[[str, int, str], None]  # (host, port, resolved address): raises DestinationRefusedError


def address_check(*, allow: Iterable[str] = (), trusted: Iterable[str] = ()) -> AddressCheck:
    allowed_hosts = {entry.strip().lower() for entry in allow}
    trusted_authorities = {entry.strip().lower() for entry in trusted}

    def check(host: str, port: int, address: str) -> None:
        name = host.lower().strip("[]")
        authority = f"[{name}]:{port}" if ":" in name else f"{name}:{port}"
        if name in allowed_hosts or authority in trusted_authorities or name in trusted_authorities:
            return
        if not _is_public(address):
            raise DestinationRefusedError(name, "it resolves to a private or local address")

    return check


def pinned_address(host: str, port: int, check: AddressCheck) -> str:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise DestinationRefusedError(host, UNRESOLVABLE, can_be_allowed=False) from None
    addresses = [str(info[4][0]) for info in infos]
    for address in addresses:
        check(host, port, address)
    return addresses[0]


class GuardedSyncBackend(httpcore.SyncBackend):
    def __init__(self, check: AddressCheck) -> None:
        self.check = check

    def connect_tcp(self, host: str, port: int, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        return super().connect_tcp(pinned_address(host, port, self.check), port, *args, **kwargs)


class GuardedAsyncBackend(httpcore.AnyIOBackend):
    def __init__(self, check: AddressCheck) -> None:
        self.check = check

    async def connect_tcp(self, host: str, port: int, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        address = await anyio.to_thread.run_sync(pinned_address, host, port, self.check)
        return await super().connect_tcp(address, port, *args, **kwargs)


def guarded_transport(check: AddressCheck, **options: Any) -> httpx.HTTPTransport:
    transport = httpx.HTTPTransport(**options)
    transport._pool._network_backend = GuardedSyncBackend(check)
    return transport


def guarded_async_transport(check: AddressCheck, **options: Any) -> httpx.AsyncHTTPTransport:
    transport = httpx.AsyncHTTPTransport(**options)
    transport._pool._network_backend = GuardedAsyncBackend(check)
    return transport
