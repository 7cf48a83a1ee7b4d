"""Registry logins checked on a client's behalf (`/validate-creds`): the registry named, the throttle, the checks.

Every attempt counts, valid or not, so that the service cannot be used to guess passwords at other registries:
against the client (WAVE_VALIDATE_CREDS_PER_MINUTE per minute; an IPv6 client by its /64), and against the
account tried, a user name at a registry, from every address together (WAVE_VALIDATE_CREDS_PER_ACCOUNT_PER_HOUR
per hour). The SSRF policy is applied before anything is sent, and again at connect time by the client's
transport. The password goes to the registry only: it is in no message, log line or cache key; the user name
only in DEBUG log lines.
"""

from __future__ import annotations

import ipaddress
import logging
from urllib.parse import urlsplit

from django.conf import settings

from credentials.clients import registry_client
from credentials.throttle import client_network, subject_digest, throttle_hit
from registry.client import (
    DEFAULT_RETRY_AFTER,
    Credentials,
    RegistryError,
    RegistryRateLimitedError,
    RegistryUnavailableError,
)
from registry.reference import DOCKER_HUB, HOSTNAME
from registry.ssrf import DestinationRefusedError
from wave_site.errors import InvalidRequest, RateLimited, TemporarilyUnavailable
from wave_site.redact import redact_url

logger = logging.getLogger("wave.credentials")

THROTTLE_WINDOW = 60
ACCOUNT_THROTTLE_WINDOW = 3600
INVALID_HOSTNAME = "Invalid registry hostname"  # the reference's wording, whatever the reason
SCHEMES = ("https://", "http://")


def registry_authority(value: str | None) -> str:
    """The registry a client names as `host[:port]`, lowercase: `docker.io` when absent; an `http(s)://`
    prefix (and a trailing `/`) dropped. InvalidRequest for anything else: a path, user info, a bad port."""
    text = (value or "").strip()
    if not text:
        return DOCKER_HUB
    for scheme in SCHEMES:
        if text.lower().startswith(scheme):
            text = text[len(scheme) :]
            break
    text = text.removesuffix("/")
    host, port = _host_and_port(text)
    if host is None:
        shown = redact_url(value or "")[:100].replace("'", "")
        raise InvalidRequest(
            f"Invalid registry '{shown}' - expected a host name with an optional port, "
            "such as quay.io or registry.example.com:5000"
        )
    return f"{host}:{port}" if port is not None else host


def _host_and_port(text: str) -> tuple[str | None, int | None]:
    """`host[:port]` split and checked (a DNS name, an IPv4 or a bracketed IPv6 address); (None, None) if not.

    Only an authority that reads back exactly as split passes: nothing may follow it (a path, a query, `x` after
    `]`), a port is 1-65535 without leading zeros, user info and IPv6 zones are refused.
    """
    if not text or "@" in text or "%" in text or any(char.isspace() or not char.isprintable() for char in text):
        return None, None
    try:
        parts = urlsplit(f"//{text}")
        port = parts.port
    except ValueError:
        return None, None
    hostname = parts.hostname or ""
    if text.startswith("["):
        try:
            ipaddress.IPv6Address(hostname)
        except ValueError:
            return None, None
        host = f"[{hostname}]"
    elif len(hostname) <= 253 and HOSTNAME.fullmatch(hostname):
        host = hostname
    else:
        return None, None
    if port == 0 or text.lower() != (f"{host}:{port}" if port is not None else host):
        return None, None
    return host, port


def registry_login_throttle(*, client: str, registry: str, username: str, now: float | None = None) -> None:
    """Count one login attempt of `client` (its address) at `username`@`registry`; RateLimited past the client's
    limit of the minute, or past the account's limit of the hour (counted from every address)."""
    limit = settings.WAVE_VALIDATE_CREDS_PER_MINUTE
    retry_after = throttle_hit(
        name="validate-creds", subject=client_network(client), limit=limit, window=THROTTLE_WINDOW, now=now
    )
    if retry_after:
        raise RateLimited(
            f"Too many credential checks from this address ({limit} per minute) - retry in {retry_after} seconds",
            retry_after=retry_after,
        )
    account_limit = settings.WAVE_VALIDATE_CREDS_PER_ACCOUNT_PER_HOUR
    account = subject_digest(registry, username.lower())  # registries that ignore case get no extra guesses
    retry_after = throttle_hit(
        name="validate-creds-account", subject=account, limit=account_limit, window=ACCOUNT_THROTTLE_WINDOW, now=now
    )
    if retry_after:
        logger.info("Registry login at %s refused: too many checks of one account", registry)
        logger.debug("Registry login at %s throttled for user name %r", registry, username)
        raise RateLimited(
            f"Too many credential checks of this account at registry '{registry}' ({account_limit} per hour) - "
            f"retry in {retry_after} seconds",
            retry_after=retry_after,
        )


def registry_login_validate(*, registry: str | None, username: str, password: str, client: str) -> None:
    """Log in at `registry` (`registry_authority` of it) with `username` and `password`, for `client`.

    InvalidRequest when the credentials are refused ("Invalid credentials for registry '<host>'"), when the
    registry is malformed, and "Invalid registry hostname" when the SSRF policy refuses it or its token
    service; RateLimited past the client's or the account's limit (every attempt counts, before any network
    call); TemporarilyUnavailable (with Retry-After) when the registry cannot answer now.
    """
    authority = registry_authority(registry)
    registry_login_throttle(client=client, registry=authority, username=username)
    try:
        is_valid = registry_client().login(authority, Credentials(username=username, password=password))
    except DestinationRefusedError as exc:
        logger.info("Registry login at %s for %s refused: %s", authority, client, exc.message)
        raise InvalidRequest(INVALID_HOSTNAME) from None
    except RegistryRateLimitedError as exc:
        raise TemporarilyUnavailable(exc.message, headers={"Retry-After": str(exc.retry_after)}) from None
    except RegistryUnavailableError as exc:
        raise TemporarilyUnavailable(exc.message, headers={"Retry-After": str(DEFAULT_RETRY_AFTER)}) from None
    except RegistryError as exc:
        raise InvalidRequest(exc.message) from None
    logger.info("Registry login at %s for %s: %s", authority, client, "valid" if is_valid else "invalid")
    if not is_valid:
        raise InvalidRequest(f"Invalid credentials for registry '{authority}'")
