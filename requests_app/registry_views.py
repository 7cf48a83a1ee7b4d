"""The OCI registry proxy (`/v2/...`, pull side). Plain Django views: the wire format is the spec's.

Manifests are built by `proxy.manifest_for` (sync: database and upstream calls); blobs are served
from the blob store with Range support, or from upstream by passing its redirect on or by streaming
the bytes through without holding them (async, so that many streams need no thread each).
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import AsyncIterator, Callable
from functools import wraps
from typing import Any
from urllib.parse import urlencode, urljoin

import httpx
from asgiref.sync import sync_to_async
from django.core.files.storage import default_storage
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from credentials.clients import registry_client
from credentials.policy import connect_check
from registry.augment import Document
from registry.client import RegistryError
from registry.ssrf import DestinationRefusedError, guarded_async_transport
from requests_app.proxy import (
    ProxyError,
    ProxyTarget,
    cached_manifest,
    count_pull,
    injected_layer_key,
    manifest_for,
    owned_digests,
    remember_served,
    resolve_token,
    served_recently,
)
from wave_site.blobstore import BlobStoreUnavailable, blob_key, blob_redirect_url, blob_size

API_VERSION = {"Docker-Distribution-API-Version": "registry/2.0"}
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
STREAM_CHUNK = 64 * 1024
_UPSTREAM_HEADERS = (
    "Content-Type",
    "Content-Length",
    "Docker-Content-Digest",
    "ETag",
    "Content-Range",
    "Accept-Ranges",
)


def oci_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> HttpResponse:
    body = json.dumps({"errors": [{"code": code, "message": message, "detail": None}]})
    response = HttpResponse(body, status=status, content_type="application/json")
    for name, value in {**API_VERSION, **(headers or {})}.items():
        response[name] = value
    return response


def _as_oci(exc: ProxyError) -> HttpResponse:
    return oci_error(exc.status, exc.code, exc.message, exc.headers)


def client_key(request: HttpRequest) -> str:
    return f"ip:{request.META.get('REMOTE_ADDR') or 'unknown'}"


def allow_methods(*methods: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        def sync_view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if request.method not in methods:
                return oci_error(405, "UNSUPPORTED", "This registry is read-only: pull only")
            response: HttpResponseBase = view(request, *args, **kwargs)
            return response

        @wraps(view)
        async def async_view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if request.method not in methods:
                return oci_error(405, "UNSUPPORTED", "This registry is read-only: pull only")
            response: HttpResponseBase = await view(request, *args, **kwargs)
            return response

        return csrf_exempt(async_view if inspect.iscoroutinefunction(view) else sync_view)

    return decorate


async def v2_unknown(request: HttpRequest, rest: str = "") -> HttpResponse:
    return oci_error(404, "NAME_UNKNOWN", "Unknown repository: pull Wave containers as <server>/wt/<token>/<image>")


@allow_methods("GET", "HEAD")
async def v2_root(request: HttpRequest) -> HttpResponse:
    response = HttpResponse("{}", content_type="application/json")
    response["Docker-Distribution-API-Version"] = "registry/2.0"
    return response


def _full_manifest(token: str, name: str, reference: str) -> tuple[Document, float]:
    target = resolve_token(token, name)
    return manifest_for(target, reference), target.expires_at


@allow_methods("GET", "HEAD")
async def manifest(request: HttpRequest, token: str, name: str, reference: str) -> HttpResponse:
    try:
        # Both steps below touch only Redis when everything is cached: no thread hop for the hot path.
        count_pull(client_key(request))
        document = served_recently(token, name, reference)
        if document is None:
            found = cached_manifest(token, name, reference) or await sync_to_async(_full_manifest)(
                token, name, reference
            )
            document = found[0]
            remember_served(token, name, reference, document, expires_at=found[1])
    except ProxyError as exc:
        return _as_oci(exc)
    if reference.startswith("sha256:") and document.digest != reference:
        return oci_error(404, "MANIFEST_UNKNOWN", f"Manifest {reference} not found")
    response = HttpResponse(b"" if request.method == "HEAD" else document.content, content_type=document.media_type)
    response["Content-Length"] = str(document.size)
    response["Docker-Content-Digest"] = document.digest
    response["ETag"] = f'"{document.digest}"'
    response["Docker-Distribution-API-Version"] = "registry/2.0"
    return response


@allow_methods("GET")
def tags_list(request: HttpRequest, token: str, name: str) -> HttpResponse:
    try:
        target = resolve_token(token, name)
        client = registry_client()
        query = urlencode({k: v for k, v in request.GET.items() if k in {"n", "last"}})
        path = f"/v2/{target.repository}/tags/list" + (f"?{query}" if query else "")
        upstream = client.request("GET", target.registry, target.repository, path)
    except ProxyError as exc:
        return _as_oci(exc)
    except DestinationRefusedError as exc:
        return oci_error(400, "DENIED", exc.message)
    except RegistryError as exc:
        return oci_error(503, "UNAVAILABLE", exc.message)
    if upstream.status_code != 200:
        code = {401: "UNAUTHORIZED", 403: "DENIED", 404: "NAME_UNKNOWN", 429: "TOOMANYREQUESTS"}.get(
            upstream.status_code, "UNAVAILABLE"
        )
        status = upstream.status_code if upstream.status_code in {401, 403, 404, 429} else 503
        return oci_error(status, code, f"Upstream registry answered {upstream.status_code} to tags/list")
    try:
        tags = upstream.json().get("tags") or []
    except (ValueError, AttributeError, RecursionError):
        return oci_error(503, "UNAVAILABLE", "Upstream registry sent an unreadable tags list")
    body = json.dumps({"name": name, "tags": tags})
    response = HttpResponse(body, content_type="application/json")
    response["Docker-Distribution-API-Version"] = "registry/2.0"
    link = upstream.headers.get("Link")
    if link:  # pagination: the next page, through this proxy
        response["Link"] = link.replace(f"/v2/{target.repository}/tags/list", f"/v2/wt/{token}/{name}/tags/list", 1)
    return response


class RangeNotSatisfiable(Exception):
    pass


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end) for `bytes=a-b`, None without a Range header; RangeNotSatisfiable otherwise."""
    if not header:
        return None
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
    if not match or (not match.group(1) and not match.group(2)):
        raise RangeNotSatisfiable
    if match.group(1):
        start = int(match.group(1))
        end = int(match.group(2)) if match.group(2) else size - 1
    else:
        start, end = max(size - int(match.group(2)), 0), size - 1
    end = min(end, size - 1)
    if start > end or start >= size:
        raise RangeNotSatisfiable
    return start, end


def _file_chunks(key: str, start: int, length: int) -> AsyncIterator[bytes]:
    async def chunks() -> AsyncIterator[bytes]:
        handle = await sync_to_async(default_storage.open, thread_sensitive=False)(key, "rb")
        try:
            await sync_to_async(handle.seek, thread_sensitive=False)(start)
            remaining = length
            while remaining > 0:
                chunk = await sync_to_async(handle.read, thread_sensitive=False)(min(STREAM_CHUNK, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
                yield chunk
        finally:
            handle.close()

    return chunks()


def _redirect(location: str) -> HttpResponse:
    response = HttpResponse(status=307)
    response["Location"] = location
    response["Docker-Distribution-API-Version"] = "registry/2.0"
    return response


def _stored_blob_location(key: str, *, method: str | None) -> str | int:
    """Where a GET goes (a remote store's URL), else the blob's size: one trip off the event loop.

    Presigning is local work, but its first call may look up credentials (instance metadata).
    """
    redirect_to = blob_redirect_url(key) if method == "GET" else None
    return redirect_to if redirect_to is not None else blob_size(key)


async def _serve_stored_blob(request: HttpRequest, key: str, digest: str) -> HttpResponseBase:
    try:
        location = await sync_to_async(_stored_blob_location, thread_sensitive=False)(key, method=request.method)
    except FileNotFoundError:
        return oci_error(404, "BLOB_UNKNOWN", f"Blob {digest} is missing from the blob store")
    except BlobStoreUnavailable as exc:
        return oci_error(503, "UNAVAILABLE", exc.message)
    if isinstance(location, str):  # a remote store serves the bytes (and ranges) itself
        redirect = _redirect(location)
        redirect["Docker-Content-Digest"] = digest
        return redirect
    size = location
    try:
        byte_range = _parse_range(request.headers.get("Range"), size)
    except RangeNotSatisfiable:
        refused = oci_error(416, "RANGE_INVALID", "Requested range not satisfiable")
        refused["Content-Range"] = f"bytes */{size}"
        return refused
    start, end = byte_range or (0, size - 1)
    length = end - start + 1 if size else 0
    status = 206 if byte_range else 200
    response: HttpResponseBase
    if request.method == "HEAD":
        response = HttpResponse(b"", status=status, content_type="application/octet-stream")
    else:
        response = StreamingHttpResponse(_file_chunks(key, start, length), status=status,
                                         content_type="application/octet-stream")  # fmt: skip
    response["Content-Length"] = str(length)
    response["Docker-Content-Digest"] = digest
    response["ETag"] = f'"{digest}"'
    response["Accept-Ranges"] = "bytes"
    response["Docker-Distribution-API-Version"] = "registry/2.0"
    if byte_range:
        response["Content-Range"] = f"bytes {start}-{end}/{size}"
    return response


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


async def _open_upstream_blob(request: HttpRequest, target: ProxyTarget, digest: str) -> httpx.Response:
    """The upstream blob response (streaming); on a 401 the cached token is dropped and fetched once more."""
    client = registry_client()
    url = f"{client.base_url(target.registry)}/v2/{target.repository}/blobs/{digest}"
    http = stream_client()
    for attempt in range(2):
        authorization = await sync_to_async(client.authorization, thread_sensitive=False)(
            target.registry, target.repository
        )
        # identity: the bytes must reach the client exactly as the registry stores them (digest-checked).
        headers = {"Accept-Encoding": "identity"}
        if authorization:
            headers["Authorization"] = authorization
        if request.headers.get("Range"):
            headers["Range"] = request.headers["Range"]
        method = "HEAD" if request.method == "HEAD" else "GET"
        upstream = await http.send(http.build_request(method, url, headers=headers), stream=True)
        if upstream.status_code != 401 or attempt == 1:
            return upstream
        await upstream.aclose()
        await sync_to_async(client._forget, thread_sensitive=False)(
            target.registry, target.repository, client.credentials(target.registry)
        )
    raise AssertionError("unreachable")


async def _upstream_blob(request: HttpRequest, target: ProxyTarget, digest: str) -> HttpResponseBase:
    try:
        upstream = await _open_upstream_blob(request, target, digest)
    except DestinationRefusedError as exc:
        return oci_error(400, "DENIED", exc.message)
    except RegistryError as exc:
        return oci_error(503, "UNAVAILABLE", exc.message)
    except httpx.HTTPError as exc:
        return oci_error(503, "UNAVAILABLE", f"Registry '{target.registry}' is unreachable: {type(exc).__name__}")
    url = str(upstream.request.url)
    method = upstream.request.method
    if upstream.is_redirect:
        await upstream.aclose()
        # The client follows the redirect itself, without our credentials (another host, e.g. a CDN).
        return _redirect(urljoin(url, upstream.headers.get("Location", "")))
    if upstream.status_code >= 400:
        await upstream.aclose()
        code = {401: "UNAUTHORIZED", 403: "DENIED", 404: "BLOB_UNKNOWN", 416: "RANGE_INVALID"}.get(
            upstream.status_code, "UNAVAILABLE"
        )
        status = upstream.status_code if upstream.status_code < 500 else 503
        extra = {"WWW-Authenticate": 'Basic realm="wave"'} if status == 401 else None
        return oci_error(status, code, f"Upstream registry answered {upstream.status_code} for blob {digest}", extra)

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in upstream.aiter_raw(STREAM_CHUNK):
                yield chunk
        finally:
            await upstream.aclose()

    response: HttpResponseBase
    if method == "HEAD":
        await upstream.aclose()
        response = HttpResponse(b"", status=upstream.status_code)
    else:
        response = StreamingHttpResponse(body(), status=upstream.status_code)
    for name in _UPSTREAM_HEADERS:
        if name in upstream.headers:
            response[name] = upstream.headers[name]
    response["Docker-Distribution-API-Version"] = "registry/2.0"
    return response


@allow_methods("GET", "HEAD")
async def blob(request: HttpRequest, token: str, name: str, digest: str) -> HttpResponseBase:
    if not DIGEST.fullmatch(digest):
        return oci_error(400, "DIGEST_INVALID", f"Invalid blob digest '{digest}'")
    try:
        # One hop to the request's own thread (database work stays where Django returns its connection).
        target, key = await sync_to_async(_locate_blob)(token, name, digest)
    except ProxyError as exc:
        return _as_oci(exc)
    if key is not None:
        return await _serve_stored_blob(request, key, digest)
    return await _upstream_blob(request, target, digest)


def _locate_blob(token: str, name: str, digest: str) -> tuple[ProxyTarget, str | None]:
    """The request, and the blob-store key when the service serves this blob itself (None: upstream's)."""
    target = resolve_token(token, name)
    key = injected_layer_key(target, digest)
    if key is None and target.is_augmented and digest in owned_digests(target):
        key = blob_key(digest)  # a config generated for this request
    return target, key
