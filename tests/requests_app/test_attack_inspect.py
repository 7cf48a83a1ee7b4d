"""Attacks on `POST /v1alpha1/inspect` (issue 13) from a hostile registry: each test fails while its fault is there;
the open ones are strict xfails naming the finding."""

from __future__ import annotations

import gzip
import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.test import Client

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
PADDING = 40 * 1024 * 1024  # ten times the 4 MiB the distribution spec lets a registry refuse manifests over
# Sent gzip-compressed (`Content-Encoding: gzip`): about 40 KiB on the wire, far under the client's 16 MiB bound.


def hostile_documents() -> dict[str, tuple[str, bytes]]:
    """A well-formed image whose manifest is padded with a 40 MiB annotation (kept uncompressed: its digest)."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Env": ["A=1"]}}).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                   "size": len(config)},
        "layers": [], "annotations": {"pad": "x" * PADDING},
    }).encode()  # fmt: skip
    return {
        "/v2/big/manifests/latest": (OCI_MANIFEST, manifest),
        f"/v2/big/blobs/{config_digest}": ("application/octet-stream", config),
    }


@pytest.fixture
def hostile_registry() -> Iterator[str]:
    documents = hostile_documents()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

        def _answer(self, body: bool) -> None:
            if self.path == "/v2/":
                media_type, content = "application/json", b"{}"
            elif self.path in documents:
                media_type, content = documents[self.path]
            else:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            digest = "sha256:" + hashlib.sha256(content).hexdigest()
            sent = gzip.compress(content, compresslevel=9)
            self.send_response(200)
            self.send_header("Content-Type", media_type)
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(sent)))
            self.send_header("Docker-Content-Digest", digest)
            self.end_headers()
            if body:
                self.wfile.write(sent)

        def do_GET(self) -> None:
            self._answer(body=True)

        def do_HEAD(self) -> None:
            self._answer(body=False)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.django_db
def test_inspect_refuses_a_gzip_bomb_manifest(hostile_registry: str) -> None:
    """registry/client.py `_read_bounded` bounded the bytes as sent (`iter_raw`), then decoded them whole: a
    gzip-encoded answer of 16 MiB inflated to gigabytes in the web process (inspect, and every upstream read)."""
    answer = Client(raise_request_exception=False).post(
        "/v1alpha1/inspect", {"containerImage": f"{hostile_registry}/big:latest"}, content_type="application/json"
    )
    assert answer.status_code != 200, answer.content[:300]
    assert "sent more than 16777216 bytes" in answer.json()["message"]
