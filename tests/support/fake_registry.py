"""A registry that serves whatever documents a test hands it, hostile ones included (anonymous, plain http).

`docker-registry` refuses to store what a hostile upstream may send (digests like `../../etc/passwd`,
16 MiB manifests, an index whose `platform` is a string), so those cases need this fake. It speaks the
distribution API's pull side: `GET /v2/`, `HEAD|GET /v2/<name>/manifests/<reference>` (with
`Docker-Content-Digest`), `GET /v2/<name>/blobs/<digest>`, `GET /v2/<name>/tags/list`, and the spec's
error body for anything unknown. Every request is recorded as `(method, path)`.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
ROUTE = re.compile(r"/v2/(?P<name>.+)/(?P<kind>manifests|blobs)/(?P<reference>[^/]+)")


def sha256(content: bytes) -> str:
    return "sha256:" + hashlib.sha256(content).hexdigest()


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        return  # a client that stops reading (a refused 16 MiB manifest) is expected here


@dataclass
class FakeRegistry:
    manifests: dict[tuple[str, str], tuple[str, bytes]] = field(default_factory=dict)
    blobs: dict[tuple[str, str], bytes] = field(default_factory=dict)
    # path -> (status, headers): answered instead of the content (429s, 5xx...)
    answers: dict[str, tuple[int, dict[str, str]]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    @property
    def host(self) -> str:
        assert self._server is not None
        return f"127.0.0.1:{self._server.server_address[1]}"

    def put_manifest(self, name: str, tag: str, document: dict[str, Any] | bytes, media_type: str = OCI_MANIFEST
                     ) -> str:  # fmt: skip
        """Serve `document` (bytes as they are) under `tag` and under its digest; the digest."""
        content = document if isinstance(document, bytes) else json.dumps(document).encode()
        digest = sha256(content)
        self.manifests[(name, tag)] = (media_type, content)
        self.manifests[(name, digest)] = (media_type, content)
        return digest

    def put_blob(self, name: str, content: bytes) -> str:
        digest = sha256(content)
        self.blobs[(name, digest)] = content
        return digest

    def image(self, name: str, tag: str, *, config_digest: str | None = None, layers: list[dict[str, Any]] | None = None
              ) -> str:  # fmt: skip
        """An image manifest with a small amd64 config (or a config digest as given); its digest."""
        config = json.dumps({"architecture": "amd64", "os": "linux", "config": {}, "rootfs": {"type": "layers",
                             "diff_ids": []}}).encode()  # fmt: skip
        digest = config_digest or self.put_blob(name, config)
        return self.put_manifest(name, tag, {
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": digest, "size": len(config)},
            "layers": layers or [],
        })  # fmt: skip

    def start(self) -> FakeRegistry:
        registry = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def answer(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def unknown(self, code: str) -> None:
                body = json.dumps({"errors": [{"code": code, "message": "unknown", "detail": None}]}).encode()
                self.answer(404, body, {"Content-Type": "application/json"})

            def do_HEAD(self) -> None:
                self.do_GET()

            def do_GET(self) -> None:
                registry.requests.append((self.command, self.path))
                path = self.path.split("?", 1)[0]
                if path in registry.answers:
                    status, headers = registry.answers[path]
                    self.answer(status, b"", headers)
                    return
                if path == "/v2/":
                    self.answer(200, b"{}", {"Content-Type": "application/json"})
                    return
                if path.endswith("/tags/list"):
                    name = path.removeprefix("/v2/").removesuffix("/tags/list")
                    tags = sorted({ref for (repo, ref) in registry.manifests if repo == name and ":" not in ref})
                    self.answer(200, json.dumps({"name": name, "tags": tags}).encode(), {})
                    return
                match = ROUTE.fullmatch(path)
                if match is None:
                    self.unknown("NAME_UNKNOWN")
                    return
                key = (match["name"], match["reference"])
                if match["kind"] == "blobs":
                    blob = registry.blobs.get(key)
                    if blob is None:
                        self.unknown("BLOB_UNKNOWN")
                    else:
                        self.answer(200, blob, {"Content-Type": "application/octet-stream",
                                                "Docker-Content-Digest": match["reference"]})  # fmt: skip
                    return
                found = registry.manifests.get(key)
                if found is None:
                    self.unknown("MANIFEST_UNKNOWN")
                    return
                media_type, content = found
                self.answer(200, content, {"Content-Type": media_type, "Docker-Content-Digest": sha256(content)})

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
