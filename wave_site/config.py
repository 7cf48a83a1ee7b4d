"""Typed readers for environment variables, and the service's commit id.

Each helper names the variable it reads in the error it raises, so that a bad setting stops the
process at start with a message an operator can act on.
"""

from __future__ import annotations

import functools
import os
import subprocess
from collections.abc import Mapping
from typing import overload
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured


def _raw(name: str, environ: Mapping[str, str] | None) -> str | None:
    value = (os.environ if environ is None else environ).get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


@overload
def env_str(name: str, default: str, *, environ: Mapping[str, str] | None = None) -> str: ...
@overload
def env_str(name: str, default: None = None, *, environ: Mapping[str, str] | None = None) -> str | None: ...
def env_str(name: str, default: str | None = None, *, environ: Mapping[str, str] | None = None) -> str | None:
    value = _raw(name, environ)
    return default if value is None else value


def env_int(
    name: str,
    default: int,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    value = _raw(name, environ)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {number}")
    if maximum is not None and number > maximum:
        raise ImproperlyConfigured(f"{name} must be at most {maximum}, got {number}")
    return number


def env_bool(name: str, default: bool, *, environ: Mapping[str, str] | None = None) -> bool:
    value = _raw(name, environ)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (true/false), got {value!r}")


def env_list(name: str, default: list[str], *, environ: Mapping[str, str] | None = None) -> list[str]:
    value = _raw(name, environ)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


@overload
def env_url(name: str, default: str, *, schemes: frozenset[str], environ: Mapping[str, str] | None = None) -> str: ...
@overload
def env_url(
    name: str, default: None, *, schemes: frozenset[str], environ: Mapping[str, str] | None = None
) -> str | None: ...
def env_url(
    name: str,
    default: str | None,
    *,
    schemes: frozenset[str],
    environ: Mapping[str, str] | None = None,
) -> str | None:
    """Read a URL and check its scheme and host, so that 'nonsense' fails here, not at first use."""
    value = _raw(name, environ)
    if value is None:
        return default
    parts = urlsplit(value)
    shown = redact_url(value)
    if parts.scheme not in schemes:
        allowed = ", ".join(sorted(schemes))
        raise ImproperlyConfigured(f"{name} must be a URL with scheme {allowed}, got {shown!r}")
    try:
        parts.port  # noqa: B018 - raises ValueError on a non-numeric port
    except ValueError:
        raise ImproperlyConfigured(f"{name} has an invalid port: {shown!r}") from None
    if not parts.hostname:
        raise ImproperlyConfigured(f"{name} must name a host, got {shown!r}")
    return value


def redact_url(url: str) -> str:
    """The URL with any password replaced, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def commit_id() -> str:
    """WAVE_COMMIT_ID, else the checkout's commit, asked of git once per process when first needed."""
    from django.conf import settings

    return settings.WAVE_COMMIT_ID or _git_commit(str(settings.BASE_DIR))


@functools.cache
def _git_commit(checkout: str) -> str:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "--short=10", "HEAD"], cwd=checkout, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else "unknown"


def registry_credentials_file(path: str) -> dict[str, tuple[str, str]]:
    """The entries of a `WAVE_REGISTRY_CREDENTIALS` file, `{host: (username, password)}` with hosts in lower case;
    ImproperlyConfigured naming the variable and the entry when it is unreadable or malformed (never a secret)."""
    import json

    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as exc:
        raise ImproperlyConfigured(f"WAVE_REGISTRY_CREDENTIALS: cannot read {path}: {type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise ImproperlyConfigured("WAVE_REGISTRY_CREDENTIALS: the file must hold a JSON object keyed by host")
    entries = {}
    for host, entry in data.items():
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("username"), str)
            or not isinstance(entry.get("password"), str)
            or not entry["username"]
            or not entry["password"]
        ):
            raise ImproperlyConfigured(f"WAVE_REGISTRY_CREDENTIALS: entry {host!r} needs a username and a password")
        entries[host.lower()] = (entry["username"], entry["password"])
    return entries
