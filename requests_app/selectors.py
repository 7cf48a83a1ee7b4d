"""Reads of container requests."""

from __future__ import annotations

from django.utils import timezone

from requests_app.models import ContainerRequest


def container_request_get_active(*, token: str) -> ContainerRequest | None:
    """The request for a token that is neither expired nor revoked; None otherwise (treated as unknown)."""
    return (
        ContainerRequest.objects.filter(token=token, revoked_at__isnull=True, expires_at__gt=timezone.now())
        .prefetch_related("layers")
        .first()
    )
