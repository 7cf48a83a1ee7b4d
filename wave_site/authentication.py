"""Operators' authentication: HTTP Basic for the API, and failed logins throttled per client address.

Every operator login (the admin's form, the API's Basic credentials) goes through `ThrottledModelBackend`.
After WAVE_LOGIN_MAX_FAILURES failures from one address within a WAVE_LOGIN_FAILURE_WINDOW-second window,
further attempts from that address are refused with 429 and Retry-After until the window ends, without
checking the password at all: hashing is the costly part (hundreds of milliseconds of CPU), so guessing can
neither go on nor slow other requests down. A correct password is refused too while the window lasts.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.base_user import AbstractBaseUser
from django.http import HttpRequest
from drf_spectacular.authentication import BasicScheme
from rest_framework.authentication import BasicAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from wave_site.cache import shared_cache
from wave_site.errors import RateLimited

if TYPE_CHECKING:
    from django.contrib.auth.models import User


def login_failures_key(*, address: str, window_start: int) -> str:
    return f"wave:login-failures:{address}:{window_start}"


def _window(now: float | None) -> tuple[float, int, int]:
    now = time.time() if now is None else now
    window = settings.WAVE_LOGIN_FAILURE_WINDOW
    return now, int(now // window) * window, window


def login_throttle_check(*, address: str, now: float | None = None) -> None:
    """RateLimited when `address` has used up its failed logins for the current window."""
    now, window_start, window = _window(now)
    failures = shared_cache().get(login_failures_key(address=address, window_start=window_start), 0)
    if failures >= settings.WAVE_LOGIN_MAX_FAILURES:
        retry_after = max(1, int(window_start + window - now))
        raise RateLimited(
            f"Too many failed logins from this address - retry in {retry_after} seconds", retry_after=retry_after
        )


def login_failure_record(*, address: str, now: float | None = None) -> None:
    """Count one failed login of `address` in the current window."""
    _, window_start, window = _window(now)
    key = login_failures_key(address=address, window_start=window_start)
    cache = shared_cache()
    cache.add(key, 0, timeout=window + 5)
    try:
        cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.add(key, 1, timeout=window + 5)


def client_address(request: HttpRequest | Request | None) -> str:
    return str(request.META.get("REMOTE_ADDR") or "unknown") if request is not None else "unknown"


class ThrottledModelBackend(ModelBackend):
    """Django's user/password backend behind the per-address throttle of failed logins."""

    def authenticate(
        self, request: HttpRequest | None, username: str | None = None, password: str | None = None, **kwargs: Any
    ) -> User | None:
        address = client_address(request)
        login_throttle_check(address=address)  # raises before any password hash is computed
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is None:
            login_failure_record(address=address)
        return user


class OperatorBasicAuthentication(BasicAuthentication):
    """HTTP Basic for operators; credentials with a NUL character are refused before any lookup.

    PostgreSQL text cannot hold NUL, so looking such a user name up would fail with a database error.
    Failed attempts count towards the address's throttle like failed admin logins.
    """

    def authenticate_credentials(
        self, userid: str, password: str, request: Request | None = None
    ) -> tuple[AbstractBaseUser, Any]:
        if "\x00" in userid or "\x00" in password:
            login_throttle_check(address=client_address(request))
            login_failure_record(address=client_address(request))
            raise AuthenticationFailed("Invalid username/password.")
        return super().authenticate_credentials(userid, password, request)


class OperatorBasicScheme(BasicScheme):  # type: ignore[no-untyped-call]  # drf-spectacular is untyped here
    """Documents OperatorBasicAuthentication as plain HTTP Basic in the OpenAPI document."""

    target_class = "wave_site.authentication.OperatorBasicAuthentication"
