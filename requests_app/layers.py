"""Injected layers: `data:` payloads decoded and verified at request time, blobs stored by digest."""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import zlib
from dataclasses import dataclass

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from wave_site.errors import BadRequest

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class LayerSpec:
    """A requested layer after validation; `data` holds a decoded and verified `data:` payload."""

    position: int
    url: str
    gzip_digest: str
    gzip_size: int
    tar_digest: str
    data: bytes | None

    @property
    def is_inline(self) -> bool:
        return self.data is not None


def blob_key(digest: str) -> str:
    algorithm, _, hex_digest = digest.partition(":")
    return f"blobs/{algorithm}/{hex_digest[:2]}/{hex_digest}"


def tar_digest_of(gzip_bytes: bytes) -> str:
    """sha256 of the decompressed stream, computed chunk by chunk (gzip members concatenated allowed)."""
    digest = hashlib.sha256()
    decompressor = zlib.decompressobj(wbits=31)
    stream = io.BytesIO(gzip_bytes)
    while chunk := stream.read(CHUNK):
        data = chunk
        while data:
            digest.update(decompressor.decompress(data, CHUNK))
            data = decompressor.unconsumed_tail
            if decompressor.eof and decompressor.unused_data:
                rest = decompressor.unused_data
                decompressor = zlib.decompressobj(wbits=31)
                data = rest
    digest.update(decompressor.flush())
    if not decompressor.eof:
        raise zlib.error("truncated gzip stream")
    return f"sha256:{digest.hexdigest()}"


def decode_data_layer(location: str, *, gzip_digest: str, gzip_size: int, tar_digest: str) -> bytes:
    """Decode a `data:` location and check size, gzip digest and tar digest; the verified gzip bytes."""
    payload = location[len("data:") :]
    try:
        gzip_bytes = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("Invalid container layer data - make sure it encoded as a base64 string") from None
    if len(gzip_bytes) != gzip_size:
        raise BadRequest(
            f"Container layer gzip size does not match - expected {gzip_size} bytes, got {len(gzip_bytes)}"
        )
    actual = f"sha256:{hashlib.sha256(gzip_bytes).hexdigest()}"
    if actual != gzip_digest:
        raise BadRequest(f"Container layer gzip digest does not match - expected '{gzip_digest}', got '{actual}'")
    try:
        actual_tar = tar_digest_of(gzip_bytes)
    except zlib.error:
        raise BadRequest("Container layer data is not a valid gzip stream") from None
    if actual_tar != tar_digest:
        raise BadRequest(f"Container layer tar digest does not match - expected '{tar_digest}', got '{actual_tar}'")
    return gzip_bytes


def blob_store_put(digest: str, content: bytes) -> str:
    """Store content under its digest once; concurrent writers of the same digest leave one blob."""
    key = blob_key(digest)
    if default_storage.exists(key):
        return key
    saved = default_storage.save(key, ContentFile(content))
    if saved != key:  # another writer won the race: same bytes, drop our copy
        default_storage.delete(saved)
    return key
