"""Reads of container requests and layer downloads."""

from __future__ import annotations

from django.utils import timezone

from requests_app.models import ContainerRequest, LayerDownload
from wave_site.blobstore import blob_exists, blob_key


def container_request_get_active(*, token: str) -> ContainerRequest | None:
    """The request for a token that is neither expired nor revoked; None otherwise (treated as unknown)."""
    return (
        ContainerRequest.objects.filter(token=token, revoked_at__isnull=True, expires_at__gt=timezone.now())
        .prefetch_related("layers")
        .first()
    )


def layer_download_verified(*, url: str, gzip_digest: str, gzip_size: int, tar_digest: str) -> bool:
    """This exact layer (URL, size, digests) was downloaded and verified before, and its blob is stored."""
    identity = LayerDownload.identity_of(url=url, gzip_size=gzip_size, gzip_digest=gzip_digest, tar_digest=tar_digest)
    is_ready = LayerDownload.objects.filter(identity=identity, state=LayerDownload.State.READY).exists()
    return is_ready and blob_exists(blob_key(gzip_digest))


def layer_download_failure(gzip_digest: str) -> str | None:
    """Why the downloads of a layer (by gzip digest) failed, when every one of them did; None otherwise."""
    downloads = list(LayerDownload.objects.filter(gzip_digest=gzip_digest).values_list("state", "failure_reason"))
    if downloads and all(state == LayerDownload.State.FAILED for state, _ in downloads):
        return downloads[0][1] or "failed"
    return None
