"""Reads of container requests."""

from __future__ import annotations

from django.db.models import QuerySet
from django.utils import timezone

from requests_app.models import ContainerRequest, InjectedLayer
from wave_site.blobstore import blob_exists, blob_key


def container_request_get_active(*, token: str) -> ContainerRequest | None:
    """The request for a token that is neither expired nor revoked; None otherwise (treated as unknown)."""
    return (
        ContainerRequest.objects.filter(token=token, revoked_at__isnull=True, expires_at__gt=timezone.now())
        .prefetch_related("layers")
        .first()
    )


def injected_layers_like(*, url: str, gzip_digest: str, gzip_size: int, tar_digest: str) -> QuerySet[InjectedLayer]:
    """Rows naming exactly this layer: same location, digests and size."""
    return InjectedLayer.objects.filter(url=url, gzip_digest=gzip_digest, gzip_size=gzip_size, tar_digest=tar_digest)


def injected_layer_verified_before(*, url: str, gzip_digest: str, gzip_size: int, tar_digest: str) -> bool:
    """This exact layer was downloaded and verified for an earlier request, and its blob is stored."""
    rows = injected_layers_like(url=url, gzip_digest=gzip_digest, gzip_size=gzip_size, tar_digest=tar_digest)
    return rows.filter(state=InjectedLayer.State.READY).exists() and blob_exists(blob_key(gzip_digest))
