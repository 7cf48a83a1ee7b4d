"""Downloading http(s) layers into the blob store, verified while they stream.

The gzip size, the gzip digest and the digest of the decompressed tar are computed chunk by chunk,
so memory stays flat whatever the layer size. Content-addressed: a digest already in the store is
not downloaded again, and one download at a time runs per digest.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import zlib
from urllib.parse import urljoin

import httpx
from django.conf import settings
from django.utils import timezone

from credentials.policy import connect_check, url_destination_check
from registry.ssrf import DestinationRefusedError, guarded_transport
from requests_app.layers import CHUNK, TarDigest
from requests_app.models import InjectedLayer
from requests_app.selectors import injected_layer_verified_before, injected_layers_like
from wave_site.blobstore import blob_key, blob_scratch_file, blob_store_put_file
from wave_site.cache import shared_cache

logger = logging.getLogger(__name__)
MAX_REDIRECTS = 5


class LayerDownloadError(Exception):
    """The layer cannot be had as declared: the reason is shown to whoever pulls."""


class LayerDownloadBusy(Exception):
    """Another worker is downloading the same digest right now."""


def injected_layer_fail(*, layer_pk: int, reason: str) -> None:
    """Settle one pending layer as failed, with the reason its status and pulls will show."""
    InjectedLayer.objects.filter(pk=layer_pk, state=InjectedLayer.State.PENDING).update(
        state=InjectedLayer.State.FAILED, failure_reason=reason, finished_at=timezone.now()
    )


def _mark(layer: InjectedLayer, *, state: str, reason: str = "") -> int:
    """Settle every pending row that names exactly this layer: same URL, digests and size.

    A row with another URL downloads (and so proves access to) the content itself; a row with other
    digests or size is a different claim, checked on its own.
    """
    rows = injected_layers_like(
        url=layer.url, gzip_digest=layer.gzip_digest, gzip_size=layer.gzip_size, tar_digest=layer.tar_digest
    ).filter(state=InjectedLayer.State.PENDING)
    fields = {"state": state, "failure_reason": reason, "finished_at": timezone.now()}
    if state == InjectedLayer.State.READY:
        fields["blob_key"] = blob_key(layer.gzip_digest)
    return rows.update(**fields)


def _open(client: httpx.Client, url: str) -> httpx.Response:
    """GET with redirects followed by hand, each hop checked against the SSRF rules."""
    for _ in range(MAX_REDIRECTS + 1):
        try:
            url_destination_check(url)
        except DestinationRefusedError as exc:
            raise LayerDownloadError(exc.message) from None
        response = client.send(client.build_request("GET", url), stream=True)
        if not response.is_redirect:
            return response
        response.close()
        url = urljoin(url, response.headers["Location"])
    raise LayerDownloadError(f"Too many redirects from {url}")


def download_verified(url: str, *, gzip_size: int, gzip_digest: str, tar_digest: str, into: str) -> None:
    """Stream `url` into the file `into`, checking size and both digests; LayerDownloadError on any mismatch."""
    limit = min(gzip_size, settings.WAVE_LAYER_DOWNLOAD_MAX_BYTES)
    if gzip_size > settings.WAVE_LAYER_DOWNLOAD_MAX_BYTES:
        raise LayerDownloadError(
            f"Layer size {gzip_size} exceeds the maximum of {settings.WAVE_LAYER_DOWNLOAD_MAX_BYTES} bytes"
        )
    deadline = time.monotonic() + settings.WAVE_LAYER_DOWNLOAD_TIMEOUT
    gzip_hash = hashlib.sha256()
    tar = TarDigest(limit=max(64 * gzip_size, 64 * 1024 * 1024))
    received = 0
    timeout = httpx.Timeout(connect=10.0, read=60.0, write=60.0, pool=10.0)
    try:
        transport = guarded_transport(connect_check)
        with (
            httpx.Client(timeout=timeout, follow_redirects=False, transport=transport) as client,
            open(into, "wb") as output,
        ):
            response = _open(client, url)
            try:
                if response.status_code != 200:
                    raise LayerDownloadError(f"Download of {url} answered HTTP {response.status_code}")
                for chunk in response.iter_raw(CHUNK):
                    received += len(chunk)
                    if received > limit:
                        raise LayerDownloadError(f"Layer is larger than its declared gzipSize of {gzip_size} bytes")
                    if time.monotonic() > deadline:
                        raise LayerDownloadError(f"Download timed out after {settings.WAVE_LAYER_DOWNLOAD_TIMEOUT} s")
                    gzip_hash.update(chunk)
                    tar.update(chunk)
                    output.write(chunk)
            finally:
                response.close()
    except DestinationRefusedError as exc:  # refused at connect time: DNS answered differently
        raise LayerDownloadError(exc.message) from None
    except httpx.TimeoutException:
        raise LayerDownloadError(f"Download of {url} timed out") from None
    except httpx.HTTPError as exc:
        raise LayerDownloadError(f"Download of {url} failed: {type(exc).__name__}") from None
    except zlib.error as exc:
        raise LayerDownloadError(f"Layer is not a valid gzip stream ({exc})") from None
    if received != gzip_size:
        raise LayerDownloadError(f"Layer size does not match: expected {gzip_size} bytes, got {received}")
    actual = f"sha256:{gzip_hash.hexdigest()}"
    if actual != gzip_digest:
        raise LayerDownloadError(f"Layer gzip digest does not match: expected {gzip_digest}, got {actual}")
    try:
        actual_tar = tar.hexdigest()
    except zlib.error as exc:
        raise LayerDownloadError(f"Layer is not a valid gzip stream ({exc})") from None
    if actual_tar != tar_digest:
        raise LayerDownloadError(f"Layer tar digest does not match: expected {tar_digest}, got {actual_tar}")


def _already_downloaded(layer: InjectedLayer) -> bool:
    return injected_layer_verified_before(
        url=layer.url, gzip_digest=layer.gzip_digest, gzip_size=layer.gzip_size, tar_digest=layer.tar_digest
    )


def injected_layer_download(*, layer_pk: int) -> str:
    """Download one pending layer (and settle every pending layer of the same digest); the state reached."""
    layer = InjectedLayer.objects.filter(pk=layer_pk).first()
    if layer is None or layer.state != InjectedLayer.State.PENDING:
        return layer.state if layer else "gone"
    if _already_downloaded(layer):
        _mark(layer, state=InjectedLayer.State.READY)
        return InjectedLayer.State.READY
    lock = f"wave:layer-download:{layer.gzip_digest}"
    owner = f"{layer_pk}:{os.getpid()}:{time.monotonic()}"
    if not shared_cache().add(lock, owner, timeout=settings.WAVE_LAYER_DOWNLOAD_TIMEOUT + 60):
        raise LayerDownloadBusy(layer.gzip_digest)
    try:
        if _already_downloaded(layer):  # finished by another worker while we waited for the lock
            _mark(layer, state=InjectedLayer.State.READY)
            return InjectedLayer.State.READY
        key = blob_key(layer.gzip_digest)
        with blob_scratch_file(key) as scratch:
            try:
                download_verified(layer.url, gzip_size=layer.gzip_size, gzip_digest=layer.gzip_digest,
                                  tar_digest=layer.tar_digest, into=scratch)  # fmt: skip
            except LayerDownloadError as exc:
                logger.warning("layer %s failed: %s", layer.gzip_digest, exc)
                _mark(layer, state=InjectedLayer.State.FAILED, reason=str(exc))
                return InjectedLayer.State.FAILED
            blob_store_put_file(key, scratch)
        _mark(layer, state=InjectedLayer.State.READY)
        return InjectedLayer.State.READY
    finally:
        if shared_cache().get(lock) == owner:  # expired and taken by another worker: not ours to drop
            shared_cache().delete(lock)
