"""The /v2 views over HTTP (uvicorn): hostile references, ranges and upstream documents get OCI errors,
never a 500; revocation is immediate on every cache backend; no blocking Redis call on the event loop (the
hot path's go through the async client); ranges answered alike from upstream and the store; configs are
not manifests."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from typing import Any

import httpx
import pytest
from pytest_django.fixtures import Settings

from tests.conftest import PushedImage
from tests.requests_app.conftest import Post
from tests.support.asgi_server import AsgiServer
from tests.support.fake_registry import OCI_INDEX, OCI_MANIFEST, FakeRegistry
from tests.support.layers import make_layer
from wave_site.metrics.usage import COUNT_ALL_SCRIPT
from wave_site.redis_async import _Connection

pytestmark = pytest.mark.slow
EVIL = "../../../../etc/passwd"


def error_of(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert response.headers["Content-Type"] == "application/json"
    errors = response.json()["errors"]
    assert len(errors) == 1
    return dict(errors[0])


def token_for(post: Post, image: str, **config: object) -> str:
    body: dict[str, object] = {"containerImage": image}
    if config:
        body["containerConfig"] = config
    response = post(body)
    assert response.status_code == 200, response.content
    return str(response.json()["containerToken"])


def test_nul_reference_is_manifest_invalid(proxy: AsgiServer, post: Post, anonymous_image: PushedImage) -> None:
    token = token_for(post, anonymous_image.reference)
    response = httpx.get(f"{proxy.url}/v2/wt/{token}/library/busybox/manifests/%00")
    assert response.status_code == 400
    assert error_of(response) == {"code": "MANIFEST_INVALID", "message": "Invalid manifest reference '\x00'",
                                  "detail": None}  # fmt: skip
    assert httpx.get(f"{proxy.url}/v2/wt/%00/library/busybox/manifests/latest").status_code == 404


def test_malformed_digest_is_refused_without_asking_upstream(
    proxy: AsgiServer, post: Post, fake_registry: FakeRegistry
) -> None:
    fake_registry.image("library/app", "v1")
    token = token_for(post, f"{fake_registry.host}/library/app:v1")
    fake_registry.requests.clear()
    response = httpx.get(f"{proxy.url}/v2/wt/{token}/library/app/manifests/sha256:zz")
    assert response.status_code == 400
    assert error_of(response) == {"code": "DIGEST_INVALID", "message": "Invalid manifest digest 'sha256:zz'",
                                  "detail": None}  # fmt: skip
    assert fake_registry.requests == []


def test_range_with_thousands_of_digits(proxy: AsgiServer, post: Post, anonymous_image: PushedImage) -> None:
    layer = make_layer({"range.txt": b"0123456789" * 50})
    size = len(layer.gzip_bytes)
    token = token_for(post, anonymous_image.reference, layers=[layer.as_request()])
    url = f"{proxy.url}/v2/wt/{token}/library/busybox/blobs/{layer.gzip_digest}"
    huge = "9" * 5000
    past_the_end = httpx.get(url, headers={"Range": f"bytes={huge}-"})
    assert past_the_end.status_code == 416
    assert past_the_end.headers["Content-Range"] == f"bytes */{size}"
    assert error_of(past_the_end) == {"code": "RANGE_INVALID", "message": "Requested range not satisfiable",
                                      "detail": None}  # fmt: skip
    to_the_end = httpx.get(url, headers={"Range": f"bytes=0-{huge}"})
    assert to_the_end.status_code == 206
    assert to_the_end.headers["Content-Range"] == f"bytes 0-{size - 1}/{size}"
    assert to_the_end.content == layer.gzip_bytes
    suffix = httpx.get(url, headers={"Range": f"bytes=-{huge}"})
    assert suffix.status_code == 206
    assert suffix.content == layer.gzip_bytes


def test_index_whose_platform_is_a_string_is_an_oci_error(
    proxy: AsgiServer, post: Post, fake_registry: FakeRegistry
) -> None:
    child = fake_registry.image("library/multi", "child")
    size = len(fake_registry.manifests[("library/multi", child)][1])
    entry = {"mediaType": OCI_MANIFEST, "digest": child, "size": size, "platform": "linux/amd64"}
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}
    fake_registry.put_manifest("library/multi", "latest", index, OCI_INDEX)
    token = token_for(post, f"{fake_registry.host}/library/multi:latest", env=["A=1"])
    response = httpx.get(f"{proxy.url}/v2/wt/{token}/library/multi/manifests/latest")
    assert response.status_code == 400
    assert error_of(response) == {"code": "UNKNOWN", "message": "The upstream image index is malformed",
                                  "detail": None}  # fmt: skip


def test_upstream_manifest_over_16_mib_is_a_bad_gateway(
    proxy: AsgiServer, post: Post, fake_registry: FakeRegistry
) -> None:
    limit = 16 * 1024 * 1024
    huge = b'{"schemaVersion":2,"layers":[],"padding":"' + b"x" * limit + b'"}'
    digest = fake_registry.put_manifest("library/huge", "v1", huge)
    token = token_for(post, f"{fake_registry.host}/library/huge:v1")
    response = httpx.get(f"{proxy.url}/v2/wt/{token}/library/huge/manifests/v1", timeout=30)
    assert response.status_code == 502
    url = f"http://{fake_registry.host}/v2/library/huge/manifests/{digest}"
    assert error_of(response) == {"code": "UNKNOWN", "message": f"Registry '{fake_registry.host}' sent more than "
                                  f"{limit} bytes for {url}", "detail": None}  # fmt: skip


@pytest.mark.parametrize("where", ["config", "layer", "index entry"])
def test_digests_in_upstream_documents_are_checked_before_use(
    where: str, proxy: AsgiServer, post: Post, fake_registry: FakeRegistry
) -> None:
    if where == "config":
        fake_registry.image("library/evil", "v1", config_digest=EVIL)
    elif where == "layer":
        fake_registry.image("library/evil", "v1", layers=[{"mediaType": OCI_MANIFEST, "digest": EVIL, "size": 1}])
    else:
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": EVIL, "size": 1, "platform": {"os": "linux", "architecture": "amd64"}}
        ]}  # fmt: skip
        fake_registry.put_manifest("library/evil", "v1", index, OCI_INDEX)
    token = token_for(post, f"{fake_registry.host}/library/evil:v1", env=["A=1"])
    response = httpx.get(f"{proxy.url}/v2/wt/{token}/library/evil/manifests/v1")
    assert response.status_code == 400
    what = "image index" if where == "index entry" else "manifest"
    assert error_of(response) == {"code": "UNKNOWN", "message": f"The upstream {what} is malformed", "detail": None}
    assert fake_registry.requests, "the manifest was fetched"
    assert all(path.startswith("/v2/") and "passwd" not in path for _, path in fake_registry.requests)


def test_upstream_rate_limit_is_passed_on_with_its_retry_after(
    proxy: AsgiServer, post: Post, fake_registry: FakeRegistry
) -> None:
    digest = fake_registry.image("library/busy", "v1")
    token = token_for(post, f"{fake_registry.host}/library/busy:v1")
    fake_registry.answers[f"/v2/library/busy/manifests/{digest}"] = (429, {"Retry-After": "7"})
    response = httpx.get(f"{proxy.url}/v2/wt/{token}/library/busy/manifests/v1")
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    assert error_of(response)["code"] == "TOOMANYREQUESTS"


def test_revocation_is_immediate_with_the_embedded_file_cache(
    proxy: AsgiServer, post: Post, anonymous_image: PushedImage, settings: Settings, tmp_path: Any
) -> None:
    from requests_app.services import container_request_revoke

    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache", "LOCATION": str(tmp_path)}
    }
    token = token_for(post, anonymous_image.reference)
    url = f"{proxy.url}/v2/wt/{token}/library/busybox/manifests/latest"
    assert httpx.get(url).status_code == 200
    assert httpx.get(url).status_code == 200  # served from the memory of recent answers
    container_request_revoke(token=token)
    refused = httpx.get(url)
    assert refused.status_code == 404
    assert error_of(refused) == {"code": "NAME_UNKNOWN", "message": f"Unknown Wave container for token '{token}'",
                                 "detail": None}  # fmt: skip


def test_no_blocking_redis_call_runs_on_the_event_loop(
    proxy: AsgiServer, post: Post, anonymous_image: PushedImage, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from redis.connection import AbstractConnection

    settings.WAVE_RATE_LIMIT_PULLS_PER_MINUTE = 1000  # the pull counter is on the path too
    on_the_loop: list[str] = []
    send = AbstractConnection.send_packed_command

    def guarded(self: AbstractConnection, *args: Any, **kwargs: Any) -> Any:
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # a thread without an event loop: fine
            return send(self, *args, **kwargs)
        on_the_loop.append(threading.current_thread().name)
        raise RuntimeError("a blocking Redis call on the event loop")

    monkeypatch.setattr(AbstractConnection, "send_packed_command", guarded)
    # The hot path's reads and pull counts do reach Redis from the loop, through the async client.
    commands_from_the_loop: list[str] = []
    send_async = _Connection.send

    def counted(self: _Connection, args: tuple[bytes | str | int, ...]) -> Any:
        asyncio.get_running_loop()
        is_usage = len(args) > 1 and args[1] == COUNT_ALL_SCRIPT  # the usage metrics' counters (wave_site.metrics)
        commands_from_the_loop.append("EVAL usage" if is_usage else str(args[0]))
        return send_async(self, args)

    monkeypatch.setattr(_Connection, "send", counted)
    layer = make_layer({"loop.txt": b"no blocking\n"})
    plain = token_for(post, anonymous_image.reference)
    augmented = token_for(post, anonymous_image.reference, layers=[layer.as_request()], env=["A=1"])
    for token in (plain, augmented):
        base = f"{proxy.url}/v2/wt/{token}/library/busybox"
        first = httpx.get(f"{base}/manifests/latest")  # the full path
        assert first.status_code == 200
        for _ in range(2):  # the cached paths
            assert httpx.get(f"{base}/manifests/latest").content == first.content
        assert httpx.head(f"{base}/manifests/latest").status_code == 200
        digest = first.headers["Docker-Content-Digest"]
        assert httpx.get(f"{base}/manifests/{digest}").content == first.content
        manifest = json.loads(first.content)
        assert httpx.get(f"{base}/blobs/{manifest['config']['digest']}").status_code == 200
        assert httpx.get(f"{base}/blobs/{manifest['layers'][0]['digest']}").status_code == 200
        assert httpx.get(f"{base}/tags/list").status_code == 200
    assert httpx.get(f"{proxy.url}/v2/wt/{augmented}/library/busybox/blobs/{layer.gzip_digest}").content == (
        layer.gzip_bytes
    )
    assert httpx.get(f"{proxy.url}/v2/wt/0123456789ab/library/busybox/manifests/latest").status_code == 404
    assert on_the_loop == []
    manifest_gets = 2 * 5 + 1
    pulls = sorted(command for command in commands_from_the_loop if command != "SELECT")  # SELECT: a new connection
    # Every manifest GET reads the cache once from the loop; pulls are counted there too while the token is cached
    # (the first pull of each token is counted on the request's thread, after loading it, as is one whose cached
    # token expired meanwhile on a slow machine; an unknown one never).
    assert pulls.count("MGET") == manifest_gets
    assert 1 <= pulls.count("EVAL") <= manifest_gets - 3
    # Usage metrics count pulls by tag served from the served-manifest memory (2 GETs and a HEAD per token) there.
    assert 1 <= pulls.count("EVAL usage") <= 2 * 3
    assert set(pulls) == {"EVAL", "EVAL usage", "MGET"}


def raw_get(server: AsgiServer, path: str, *, range_header: bytes) -> tuple[int, dict[str, str], bytes]:
    """A GET with a Range header sent byte for byte (HTTP clients refuse to send hostile ones)."""
    request = (f"GET {path} HTTP/1.1\r\nHost: {server.host}\r\nConnection: close\r\n").encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as connection:
        connection.sendall(request + b"Range: " + range_header + b"\r\n\r\n")
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    if headers.get("transfer-encoding") == "chunked":
        body = dechunked(body)
    return int(status_line.split()[1]), headers, body


def dechunked(body: bytes) -> bytes:
    data = b""
    while True:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return data
        data, body = data + body[:size], body[size + 2 :]


RANGE_INVALID = {"code": "RANGE_INVALID", "message": "Requested range not satisfiable", "detail": None}


@pytest.mark.parametrize("source", ["upstream", "store"])
def test_hostile_and_unusual_ranges_get_the_same_answers_from_upstream_and_the_store(
    source: str, proxy: AsgiServer, post: Post, anonymous_image: PushedImage
) -> None:
    layer = make_layer({"ranges.txt": b"0123456789" * 40})
    token = token_for(post, anonymous_image.reference, layers=[layer.as_request()])
    manifest = json.loads(httpx.get(f"{proxy.url}/v2/wt/{token}/library/busybox/manifests/latest").content)
    if source == "store":
        digest, content = layer.gzip_digest, layer.gzip_bytes
    else:
        digest = manifest["layers"][0]["digest"]  # busybox's own layer, streamed from the registry
        content = httpx.get(f"{anonymous_image.registry.url}/v2/library/busybox/blobs/{digest}").content
    path = f"/v2/wt/{token}/library/busybox/blobs/{digest}"
    size = len(content)

    for malformed in (b"bytes=\xff-1", b"bytes=\xc3\xbf-1", b"bytes=a-b", b"bytes=1-0"):
        status, headers, body = raw_get(proxy, path, range_header=malformed)
        assert status == 416, malformed
        assert json.loads(body) == {"errors": [RANGE_INVALID]}
        assert headers.get("content-range") == (f"bytes */{size}" if source == "store" else None)
    for whole in (b"bytes=0-1,2-3", b"bytes=0-1, 5-", b"items=0-1"):  # several ranges, or another unit: ignored
        status, headers, body = raw_get(proxy, path, range_header=whole)
        assert (status, body) == (200, content), whole
        assert "content-range" not in headers
    huge = b"9" * 30
    for spelled, start, end in ((b"bytes=0-1\t", 0, 1), (b"bytes= 0-1", 0, 1), (b"Bytes=2 - 5", 2, 5),
                                (b"bytes=0-" + huge, 0, size - 1), (b"bytes=-" + huge, 0, size - 1)):  # fmt: skip
        status, headers, body = raw_get(proxy, path, range_header=spelled)
        assert (status, body) == (206, content[start : end + 1]), spelled
        assert headers["content-range"] == f"bytes {start}-{end}/{size}"
    status, headers, body = raw_get(proxy, path, range_header=b"bytes=" + huge + b"-")
    assert (status, json.loads(body)) == (416, {"errors": [RANGE_INVALID]})


def test_a_generated_config_is_not_served_as_a_manifest(
    proxy: AsgiServer, post: Post, anonymous_image: PushedImage
) -> None:
    token = token_for(post, anonymous_image.reference, env=["A=1"])
    base = f"{proxy.url}/v2/wt/{token}/library/busybox"
    manifest = httpx.get(f"{base}/manifests/latest")
    config_digest = json.loads(manifest.content)["config"]["digest"]
    assert httpx.get(f"{base}/blobs/{config_digest}").status_code == 200  # generated for this token
    for _ in range(2):
        refused = httpx.get(f"{base}/manifests/{config_digest}")
        assert refused.status_code == 404
        assert error_of(refused) == {"code": "MANIFEST_UNKNOWN", "message": f"Manifest {config_digest} not found",
                                     "detail": None}  # fmt: skip
    assert httpx.get(f"{base}/manifests/{manifest.headers['Docker-Content-Digest']}").content == manifest.content
