"""Injected layers: `data:` payloads decoded and verified at request time; digests of gzip streams."""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import zlib
from dataclasses import dataclass

from wave_site.errors import InvalidRequest

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


class TarDigest:
    """sha256 of a gzip stream's decompressed content, fed chunk by chunk; refuses more than `limit` bytes out."""

    def __init__(self, *, limit: int) -> None:
        self.digest = hashlib.sha256()
        self.decompressor = zlib.decompressobj(wbits=31)
        self.limit = limit
        self.produced = 0

    def _emit(self, data: bytes) -> None:
        self.produced += len(data)
        if self.produced > self.limit:
            raise zlib.error(f"decompresses to more than {self.limit} bytes")
        self.digest.update(data)

    def update(self, chunk: bytes) -> None:
        data = chunk
        while data:
            self._emit(self.decompressor.decompress(data, CHUNK))
            data = self.decompressor.unconsumed_tail
            if self.decompressor.eof and self.decompressor.unused_data:
                rest = self.decompressor.unused_data  # another gzip member follows
                self.decompressor = zlib.decompressobj(wbits=31)
                data = rest

    def hexdigest(self) -> str:
        self._emit(self.decompressor.flush())
        if not self.decompressor.eof:
            raise zlib.error("truncated gzip stream")
        return f"sha256:{self.digest.hexdigest()}"


def tar_digest_of(gzip_bytes: bytes, *, limit: int = 2**40) -> str:
    """sha256 of the decompressed stream (concatenated gzip members allowed)."""
    tar = TarDigest(limit=limit)
    stream = io.BytesIO(gzip_bytes)
    while chunk := stream.read(CHUNK):
        tar.update(chunk)
    return tar.hexdigest()


def decode_data_layer(location: str, *, gzip_digest: str, gzip_size: int, tar_digest: str) -> bytes:
    """Decode a `data:` location and check size, gzip digest and tar digest; the verified gzip bytes."""
    payload = location[len("data:") :]
    try:
        gzip_bytes = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("Invalid container layer data - make sure it encoded as a base64 string") from None
    if len(gzip_bytes) != gzip_size:
        raise InvalidRequest(
            f"Container layer gzip size does not match - expected {gzip_size} bytes, got {len(gzip_bytes)}"
        )
    actual = f"sha256:{hashlib.sha256(gzip_bytes).hexdigest()}"
    if actual != gzip_digest:
        raise InvalidRequest(f"Container layer gzip digest does not match - expected '{gzip_digest}', got '{actual}'")
    try:
        # Bounded: a small gzip bomb must not cost minutes of CPU on the request path.
        actual_tar = tar_digest_of(gzip_bytes, limit=max(64 * len(gzip_bytes), 64 * 1024 * 1024))
    except zlib.error:
        raise InvalidRequest("Container layer data is not a valid gzip stream") from None
    if actual_tar != tar_digest:
        raise InvalidRequest(f"Container layer tar digest does not match - expected '{tar_digest}', got '{actual_tar}'")
    return gzip_bytes
