"""Request bodies through uvicorn: large JSON accepted up to the limit, chunked bodies read and bounded,
and a declared length over the limit refused before a byte of the body is read."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterable, Iterator

import httpx
import pytest

from requests_app.models import ContainerRequest
from tests.conftest import PushedImage
from tests.support.asgi_server import AsgiServer
from tests.support.layers import make_layer

pytestmark = pytest.mark.django_db(transaction=True)


def raw_exchange(server: AsgiServer, head: bytes, chunks: Iterable[bytes] = ()) -> tuple[int, dict[str, str], bytes]:
    """Send a request head and then body chunks until the server answers; the parsed answer."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head)
        for chunk in chunks:
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break  # the server answered and closed: stop sending
        received = b""
        while b"\r\n\r\n" not in received:
            data = sock.recv(65536)
            assert data, f"connection closed without an answer: {received!r}"
            received += data
        head_bytes, body = received.split(b"\r\n\r\n", 1)
        status_line, *header_lines = head_bytes.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in header_lines)}

        def complete() -> bool:
            if headers.get("transfer-encoding") == "chunked":
                return body.endswith(b"0\r\n\r\n")
            return len(body) >= int(headers.get("content-length", "0"))

        while not complete():
            data = sock.recv(65536)
            if not data:
                break
            body += data
    if headers.get("transfer-encoding") == "chunked":
        body = dechunk(body)
    return int(status_line.split()[1]), headers, body


def dechunk(data: bytes) -> bytes:
    out = b""
    while True:
        size_line, data = data.split(b"\r\n", 1)
        size = int(size_line, 16)
        if size == 0:
            return out
        out, data = out + data[:size], data[size + 2 :]


def post_head(path: str, **headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chunked(body: bytes, size: int = 16384) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        piece = body[start : start + size]
        yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    yield b"0\r\n\r\n"


def test_three_megabyte_data_layer_is_accepted(asgi_server: AsgiServer, anonymous_image: PushedImage) -> None:
    layer = make_layer({"random.bin": os.urandom(3_000_000)})  # incompressible: ~3 MB gzip, ~4 MB of base64
    body = {"containerImage": anonymous_image.reference, "containerConfig": {"layers": [layer.as_request()]}}
    response = httpx.post(f"{asgi_server.url}/container-token", json=body, timeout=60)
    assert response.status_code == 200, response.text
    stored = ContainerRequest.objects.get(token=response.json()["containerToken"])
    assert [(row.gzip_digest, row.gzip_size) for row in stored.layers.all()] == [
        (layer.gzip_digest, len(layer.gzip_bytes))
    ]


def test_declared_length_over_the_limit_is_refused_before_the_body_is_read(asgi_server: AsgiServer, settings) -> None:
    # Nothing of the 300 MiB is sent: the answer must come from the head alone.
    status, headers, body = raw_exchange(asgi_server, post_head("/container-token", Content_Length=str(300 * 1024**2)))
    assert status == 413
    assert headers["connection"] == "close"
    assert json.loads(body) == {
        "message": f"Request body exceeds the maximum allowed size of {settings.WAVE_MAX_REQUEST_BYTES} bytes"
    }


def test_declared_length_over_the_limit_under_v2_is_an_oci_error(asgi_server: AsgiServer, settings) -> None:
    status, headers, body = raw_exchange(
        asgi_server, post_head("/v2/wt/x/y/blobs/uploads/", Content_Length="99999999999")
    )
    assert status == 413
    assert headers["docker-distribution-api-version"] == "registry/2.0"
    message = f"Request body exceeds the maximum allowed size of {settings.WAVE_MAX_REQUEST_BYTES} bytes"
    assert json.loads(body) == {"errors": [{"code": "SIZE_INVALID", "message": message, "detail": None}]}


def test_chunked_body_is_read(asgi_server: AsgiServer, anonymous_image: PushedImage) -> None:
    payload = json.dumps({"containerImage": anonymous_image.reference, "containerConfig": {"env": ["CHUNKED=1"]}})
    status, _, body = raw_exchange(
        asgi_server, post_head("/container-token", Transfer_Encoding="chunked"), chunked(payload.encode(), size=7)
    )
    assert status == 200, body
    stored = ContainerRequest.objects.get(token=json.loads(body)["containerToken"])
    assert stored.container_config["env"] == ["CHUNKED=1"]


def test_chunked_body_over_the_limit_is_413_and_not_stored(
    asgi_server: AsgiServer, anonymous_image: PushedImage, settings
) -> None:
    settings.WAVE_MAX_REQUEST_BYTES = 64 * 1024
    padding = "x" * (256 * 1024)
    payload = json.dumps({"containerImage": anonymous_image.reference, "containerConfig": {"env": [f"P={padding}"]}})
    status, headers, body = raw_exchange(
        asgi_server, post_head("/container-token", Transfer_Encoding="chunked"), chunked(payload.encode())
    )
    assert status == 413
    assert headers["connection"] == "close"
    assert json.loads(body) == {"message": "Request body exceeds the maximum allowed size of 65536 bytes"}
    assert ContainerRequest.objects.count() == 0


def test_body_within_a_lowered_limit_still_passes(
    asgi_server: AsgiServer, anonymous_image: PushedImage, settings
) -> None:
    settings.WAVE_MAX_REQUEST_BYTES = 64 * 1024
    body = {"containerImage": anonymous_image.reference}
    response = httpx.post(f"{asgi_server.url}/container-token", json=body, timeout=30)
    assert response.status_code == 200, response.text
