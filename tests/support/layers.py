"""Layer tarballs made in memory, with the digests a client would send."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import tarfile
from dataclasses import dataclass


@dataclass(frozen=True)
class Layer:
    gzip_bytes: bytes
    tar_digest: str

    @property
    def gzip_digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.gzip_bytes).hexdigest()

    @property
    def data_location(self) -> str:
        return "data:" + base64.b64encode(self.gzip_bytes).decode()

    def as_request(self, location: str | None = None, **overrides: object) -> dict[str, object]:
        body: dict[str, object] = {
            "location": location or self.data_location,
            "gzipDigest": self.gzip_digest,
            "gzipSize": len(self.gzip_bytes),
            "tarDigest": self.tar_digest,
        }
        body.update(overrides)
        return body


def make_layer(files: dict[str, bytes]) -> Layer:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = 0o644
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(content))
    tar_bytes = buffer.getvalue()
    return Layer(
        gzip_bytes=gzip.compress(tar_bytes, mtime=0), tar_digest="sha256:" + hashlib.sha256(tar_bytes).hexdigest()
    )
