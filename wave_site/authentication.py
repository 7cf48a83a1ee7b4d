"""API authentication for operators."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from drf_spectacular.authentication import BasicScheme
from rest_framework.authentication import BasicAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request


class OperatorBasicAuthentication(BasicAuthentication):
    """HTTP Basic for operators; credentials with a NUL character are refused before any lookup.

    PostgreSQL text cannot hold NUL, so looking such a user name up would fail with a database error.
    """

    def authenticate_credentials(
        self, userid: str, password: str, request: Request | None = None
    ) -> tuple[AbstractBaseUser, Any]:
        if "\x00" in userid or "\x00" in password:
            raise AuthenticationFailed("Invalid username/password.")
        return super().authenticate_credentials(userid, password, request)


class OperatorBasicScheme(BasicScheme):  # type: ignore[no-untyped-call]  # drf-spectacular is untyped here
    """Documents OperatorBasicAuthentication as plain HTTP Basic in the OpenAPI document."""

    target_class = "wave_site.authentication.OperatorBasicAuthentication"
