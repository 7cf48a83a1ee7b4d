"""Where a blob's bytes come from, and the answers that serve them: the blob store (injected layers and
generated configs, with Range support, or a redirect to a remote store), else the upstream registry
(its redirect passed on, or the bytes streamed through without holding them).

Locating a blob is synchronous (database, cache, store, registry token) and takes one hop to the
request's thread; streaming is async, so that many streams need no thread each.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from urllib.parse import urljoin

import httpx
from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse

from credentials.policy import connect_check
from registry.client import BlobUnknownError, RegistryClient, RegistryUnavailableError, Resource
from registry.ssrf import guarded_async_transport
from requests_app.models import InjectedLayer
from requests_app.oci.errors import BlobNotAvailable, DigestInvalid, RangeNotSatisfiable
from requests_app.oci.manifests import owned_digests
from requests_app.oci.tokens import ProxyTarget, registry_client_for, resolve_token
from wave_site.blobstore import blob_key, blob_read_range, blob_redirect_url, blob_size
from wave_site.metrics.prometheus import blob_bytes_count

DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
STREAM_CHUNK = 64 * 1024
MAX_RANGE_DIGITS = 18  # longer numbers are past any blob's end (and int() refuses thousands of digits)
# One range of a `bytes=` range set, with optional whitespace around it; ASCII digits only.
RANGE_SPEC = re.compile(r"[ \t]*([0-9]*)[ \t]*-[ \t]*([0-9]*)[ \t]*", re.ASCII)
UPSTREAM_HEADERS = (
    "Content-Type",
    "Content-Length",
    "Docker-Content-Digest",
    "ETag",
    "Content-Range",
    "Accept-Ranges",
)


@dataclass(frozen=True)
class StoredBlob:
    """A blob this service holds: served from `key`, or fetched by clients from `redirect` (a remote store)."""

    key: str
    size: int
    redirect: str | None = None


@dataclass(frozen=True)
class UpstreamBlob:
    """A blob of the upstream image: `url` at its registry, with the `authorization` to pull it."""

    target: ProxyTarget
    url: str
    authorization: str | None


def check_digest(digest: str) -> None:
    if not DIGEST.fullmatch(digest):
        raise DigestInvalid(f"Invalid blob digest '{digest[:160]}'")


def locate_blob(*, token: str, name: str, digest: str, method: str | None) -> StoredBlob | UpstreamBlob:
    """Where the bytes of `digest` come from, for this token (only its own layers and generated configs
    are served from the store; anything else is upstream's)."""
    target = resolve_token(token, name)
    key = _injected_layer_key(target, digest)
    if key is None and target.is_augmented and digest in owned_digests(target):
        key = blob_key(digest)  # a config generated for this request
    if key is not None:
        # Presigning is local work, but its first call may look up credentials (instance metadata).
        redirect = blob_redirect_url(key) if method == "GET" else None
        if redirect is not None:
            return StoredBlob(key=key, size=0, redirect=redirect)
        try:
            return StoredBlob(key=key, size=blob_size(key))
        except FileNotFoundError:
            raise BlobNotAvailable(f"Blob {digest} is missing from the blob store") from None
    client = registry_client_for(target)
    url = f"{client.base_url(target.registry)}/v2/{target.repository}/blobs/{digest}"
    return UpstreamBlob(target=target, url=url, authorization=client.authorization(target.registry, target.repository))


def _injected_layer_key(target: ProxyTarget, digest: str) -> str | None:
    """Blob-store key of an injected layer of this request (ready ones only), else None."""
    if digest not in target.layer_digests:
        return None
    layer = (
        InjectedLayer.objects.filter(request_id=target.pk, gzip_digest=digest, state=InjectedLayer.State.READY)
        .only("blob_key")
        .first()
    )
    if layer is None:
        raise BlobNotAvailable(f"Container layer {digest} is not available (yet)")
    return layer.blob_key


async def serve_blob(request: HttpRequest, *, token: str, name: str, digest: str) -> HttpResponseBase:
    """The answer to a blob GET or HEAD."""
    check_digest(digest)
    found = await sync_to_async(locate_blob)(token=token, name=name, digest=digest, method=request.method)
    if isinstance(found, StoredBlob):
        response = _stored_blob_response(request, found, digest)
    else:
        response = await _upstream_blob_response(request, found, digest)
    if request.method == "GET" and response.status_code in (200, 206):  # redirects serve no bytes here
        # As announced (Content-Length): a client that hangs up mid-blob counts in full.
        length = response.get("Content-Length", "")
        size = int(length) if length.isdigit() else 0
        blob_bytes_count(source="stored" if isinstance(found, StoredBlob) else "upstream", size=size)
    return response


def _number(digits: str) -> int:
    return int(digits) if len(digits) <= MAX_RANGE_DIGITS else 10**MAX_RANGE_DIGITS


@dataclass(frozen=True)
class ByteRange:
    """One `bytes=` range as asked: `first-last`, `first-` (last None) or the suffix `-last` (first None)."""

    first: int | None
    last: int | None

    @property
    def header(self) -> str:
        """The Range header to forward: canonical ASCII, numbers clamped (past any blob's end)."""
        return f"bytes={'' if self.first is None else self.first}-{'' if self.last is None else self.last}"

    def within(self, size: int) -> tuple[int, int]:
        """(start, end) of this range in a blob of `size` bytes; RangeNotSatisfiable if none of it is there."""
        if self.first is None:  # the last `last` bytes (none for `-0`)
            start, end = size - min(self.last or 0, size), size - 1
        else:
            start, end = self.first, size - 1 if self.last is None else min(self.last, size - 1)
        if start > end or start >= size:
            raise RangeNotSatisfiable(size)
        return start, end


class MalformedRange(ValueError):
    """A `bytes=` Range header that is not a list of ranges (RFC 9110 section 14.1.1)."""


def requested_range(header: str | None) -> ByteRange | None:
    """The one range a Range header asks for; None when there is none to honour: no header, another unit, or
    several ranges (RFC 9110 allows ignoring Range: the whole blob is served). MalformedRange for a `bytes=`
    header that is not ranges (control characters, non-ASCII, `bytes=a-b`, `bytes=-`)."""
    if not header:
        return None
    unit, equals, ranges = header.partition("=")
    if not equals or unit.strip(" \t").lower() != "bytes":
        return None  # another range unit (or none): ignored, as RFC 9110 requires
    specs = [RANGE_SPEC.fullmatch(part) for part in ranges.split(",")]
    if not all(specs) or not all(spec.group(1) or spec.group(2) for spec in specs if spec):
        raise MalformedRange(header)
    if len(specs) > 1:
        return None
    first, last = specs[0].group(1), specs[0].group(2)  # type: ignore[union-attr]
    if first and last and _number(first) > _number(last):
        raise MalformedRange(header)
    return ByteRange(_number(first) if first else None, _number(last) if last else None)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end) of the range a stored blob of `size` bytes serves; None for the whole blob."""
    try:
        byte_range = requested_range(header)
    except MalformedRange:
        raise RangeNotSatisfiable(size) from None
    return byte_range.within(size) if byte_range is not None else None


def _redirect(location: str) -> HttpResponse:
    response = HttpResponse(status=307)
    response["Location"] = location
    return response


def _stored_blob_response(request: HttpRequest, blob: StoredBlob, digest: str) -> HttpResponseBase:
    if blob.redirect is not None:  # a remote store serves the bytes (and ranges) itself
        redirect = _redirect(blob.redirect)
        redirect["Docker-Content-Digest"] = digest
        return redirect
    byte_range = parse_range(request.headers.get("Range"), blob.size)
    start, end = byte_range or (0, blob.size - 1)
    length = end - start + 1 if blob.size else 0
    status = 206 if byte_range else 200
    response: HttpResponseBase
    if request.method == "HEAD":
        response = HttpResponse(b"", status=status, content_type="application/octet-stream")
    else:
        chunks = _stored_chunks(blob.key, start, length)
        response = StreamingHttpResponse(chunks, status=status, content_type="application/octet-stream")
    response["Content-Length"] = str(length)
    response["Docker-Content-Digest"] = digest
    response["ETag"] = f'"{digest}"'
    response["Accept-Ranges"] = "bytes"
    if byte_range:
        response["Content-Range"] = f"bytes {start}-{end}/{blob.size}"
    return response


def _next_chunk(chunks: Iterator[bytes]) -> bytes | None:
    return next(chunks, None)


async def _stored_chunks(key: str, start: int, length: int) -> AsyncIterator[bytes]:
    chunks = blob_read_range(key, start=start, length=length, chunk_size=STREAM_CHUNK)
    try:
        while (chunk := await sync_to_async(_next_chunk, thread_sensitive=False)(chunks)) is not None:
            yield chunk
    finally:
        await sync_to_async(chunks.close, thread_sensitive=False)()


_stream_client: httpx.AsyncClient | None = None


def stream_client() -> httpx.AsyncClient:
    """One async client per process (each uvicorn worker has one event loop): connections are reused."""
    global _stream_client
    if _stream_client is None:
        timeout = httpx.Timeout(connect=10.0, read=60.0, write=60.0, pool=10.0)
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
        transport = guarded_async_transport(connect_check, limits=limits)
        _stream_client = httpx.AsyncClient(timeout=timeout, transport=transport, follow_redirects=False)
    return _stream_client


def _fresh_authorization(client: RegistryClient, target: ProxyTarget) -> str | None:
    client.forget_authorization(target.registry, target.repository)
    return client.authorization(target.registry, target.repository)


async def _open_upstream_blob(request: HttpRequest, blob: UpstreamBlob) -> httpx.Response:
    """The upstream blob response (streaming); on a 401 the cached token is dropped and fetched once more."""
    http = stream_client()
    authorization = blob.authorization
    try:  # only a well-formed single range is forwarded, rewritten: never the client's bytes as they came
        byte_range = requested_range(request.headers.get("Range"))
    except MalformedRange:
        raise RangeNotSatisfiable(None) from None
    for attempt in range(2):
        # identity: the bytes must reach the client exactly as the registry stores them (digest-checked).
        headers = {"Accept-Encoding": "identity"}
        if authorization:
            headers["Authorization"] = authorization
        if byte_range is not None:
            headers["Range"] = byte_range.header
        method = "HEAD" if request.method == "HEAD" else "GET"
        try:
            upstream = await http.send(http.build_request(method, blob.url, headers=headers), stream=True)
        except httpx.HTTPError as exc:
            registry = blob.target.registry
            raise RegistryUnavailableError(f"Registry '{registry}' is unreachable: {type(exc).__name__}") from None
        if upstream.status_code != 401 or attempt == 1:
            return upstream
        await upstream.aclose()
        client = registry_client_for(blob.target)
        authorization = await sync_to_async(_fresh_authorization, thread_sensitive=False)(client, blob.target)
    raise AssertionError("unreachable")


async def _upstream_blob_response(request: HttpRequest, blob: UpstreamBlob, digest: str) -> HttpResponseBase:
    upstream = await _open_upstream_blob(request, blob)
    if upstream.is_redirect:
        await upstream.aclose()
        # The client follows the redirect itself, without our credentials (another host, e.g. a CDN).
        return _redirect(urljoin(str(upstream.request.url), upstream.headers.get("Location", "")))
    if upstream.status_code >= 400:
        await upstream.aclose()
        if upstream.status_code == 416:
            raise RangeNotSatisfiable(None, content_range=upstream.headers.get("Content-Range"))
        target = blob.target
        RegistryClient.raise_for_status(
            upstream, Resource(target.registry, target.repository, digest), unknown=BlobUnknownError
        )

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in upstream.aiter_raw(STREAM_CHUNK):
                yield chunk
        finally:
            await upstream.aclose()

    response: HttpResponseBase
    if request.method == "HEAD":
        await upstream.aclose()
        response = HttpResponse(b"", status=upstream.status_code)
    else:
        response = StreamingHttpResponse(body(), status=upstream.status_code)
    for name in UPSTREAM_HEADERS:
        if name in upstream.headers:
            response[name] = upstream.headers[name]
    return response
