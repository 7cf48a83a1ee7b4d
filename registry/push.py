"""Registry push side (OCI distribution): blob existence, cross-repository mount, blob upload (monolithic or
chunked), manifest PUT; and the copy of an image, registry to registry, built on them.

A library like `registry.client`, whose `RegistryClient` it drives: same connections (and SSRF guard), same
credentials lookup, same auth challenge. Pushing needs a token with `pull,push` scope (and `pull` on the
repository a blob is mounted from): those tokens are kept by the `RegistryPusher` for its lifetime only, never
in the shared cache. Blobs are streamed from the source and verified against their digest before the upload is
committed; manifests are pushed last, by digest (children before their index), then tagged.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from registry.client import (
    MANIFEST_MEDIA_TYPES,
    BlobUnknownError,
    Challenge,
    Credentials,
    RegistryClient,
    RegistryError,
    RegistryUnavailableError,
    Resource,
    is_digest,
    is_reference,
)
from registry.endpoints import registry_base_url
from registry.platform import Platform
from registry.reference import ImageReference

INDEX_TYPES = frozenset(
    {"application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"}
)
MONOLITHIC_MAX = 16 * 1024 * 1024  # blobs up to this size are read, verified, and sent in one PUT
CHUNK_SIZE = 8 * 1024 * 1024
MAX_REDIRECTS = 5
Log = Callable[[str], None]


class CopyStopped(Exception):
    """The copy was asked to stop (its job was cancelled or taken back): nothing more is pushed."""


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int


class RegistryPusher:
    """Pushes to registries with the credentials of `client` (its lookup), through its connections."""

    def __init__(
        self, client: RegistryClient, *, monolithic_max: int = MONOLITHIC_MAX, chunk_size: int = CHUNK_SIZE
    ) -> None:
        self.client = client
        self.monolithic_max = monolithic_max
        self.chunk_size = chunk_size
        self._tokens: dict[tuple[str, str, str], str] = {}

    # --- blobs ----------------------------------------------------------------------------------
    def blob_exists(self, registry: str, repository: str, digest: str) -> bool:
        _check_digest(digest)
        response = self._request("HEAD", registry, repository, f"/v2/{repository}/blobs/{digest}")
        if response.status_code == 404:
            return False
        self.client.raise_for_status(response, Resource(registry, repository, digest), unknown=BlobUnknownError)
        return True

    def blob_mount(self, registry: str, repository: str, digest: str, *, source_repository: str) -> str | None:
        """Mount a blob from another repository of the same registry; None when mounted, else the upload URL the
        registry opened instead (it may refuse mounts, or not have the blob readable there)."""
        _check_digest(digest)
        path = f"/v2/{repository}/blobs/uploads/?{httpx.QueryParams({'mount': digest, 'from': source_repository})}"
        response = self._request("POST", registry, repository, path, mount_from=source_repository)
        if response.status_code == 201:
            return None
        return self._upload_location(response, registry, repository)

    def blob_upload_start(self, registry: str, repository: str) -> str:
        response = self._request("POST", registry, repository, f"/v2/{repository}/blobs/uploads/")
        return self._upload_location(response, registry, repository)

    def blob_upload(self, registry: str, repository: str, blob: Blob, chunks: Iterator[bytes], *,
                    location: str | None = None) -> None:  # fmt: skip
        """Upload a blob whose bytes `chunks` yields: verified against its digest (and size) before the upload
        is committed. Small blobs go in one PUT, larger ones in PATCH chunks then a closing PUT."""
        _check_digest(blob.digest)
        location = location or self.blob_upload_start(registry, repository)
        resource = Resource(registry, repository, blob.digest)
        if blob.size <= self.monolithic_max:
            data = bytearray()
            for chunk in chunks:
                data += chunk
                if len(data) > blob.size:
                    break
            _verify(bytes(data), blob)
            url = _with_digest(location, blob.digest)
            headers = {"Content-Type": "application/octet-stream"}
            response = self._request_url("PUT", registry, repository, url, content=bytes(data), headers=headers)
            self.client.raise_for_status(response, resource)
            return
        hasher, offset = hashlib.sha256(), 0
        for chunk in _chunked(chunks, self.chunk_size):
            hasher.update(chunk)
            span = f"{offset}-{offset + len(chunk) - 1}"
            headers = {"Content-Type": "application/octet-stream", "Content-Range": span}
            response = self._request_url("PATCH", registry, repository, location, content=chunk, headers=headers)
            self.client.raise_for_status(response, resource)
            location = self._upload_location(response, registry, repository)
            offset += len(chunk)
            if offset > blob.size:
                break
        if offset != blob.size or "sha256:" + hasher.hexdigest() != blob.digest:
            self._request_url("DELETE", registry, repository, location)
            raise RegistryError(f"Blob {blob.digest} does not match its digest or size: not pushed")
        response = self._request_url("PUT", registry, repository, _with_digest(location, blob.digest), content=b"")
        self.client.raise_for_status(response, resource)

    # --- manifests ------------------------------------------------------------------------------
    def manifest_put(self, registry: str, repository: str, reference: str, content: bytes, media_type: str) -> str:
        """PUT a manifest's exact bytes by tag or digest; its digest (sha256 of the bytes)."""
        if not is_reference(reference):
            raise RegistryError(f"Refusing to push manifest '{reference[:80]}': not a tag or digest")
        digest = "sha256:" + hashlib.sha256(content).hexdigest()
        if is_digest(reference) and reference != digest:
            raise RegistryError(f"Manifest bytes do not match digest {reference}: not pushed")
        response = self._request("PUT", registry, repository, f"/v2/{repository}/manifests/{reference}",
                                 content=content, headers={"Content-Type": media_type})  # fmt: skip
        self.client.raise_for_status(response, Resource(registry, repository, reference))
        sent = response.headers.get("Docker-Content-Digest")
        if sent and sent != digest:
            raise RegistryError(f"Registry '{registry}' stored manifest {reference} as {sent}, not {digest}")
        return digest

    # --- transport ------------------------------------------------------------------------------
    def _upload_location(self, response: httpx.Response, registry: str, repository: str) -> str:
        self.client.raise_for_status(response, Resource(registry, repository))
        location = response.headers.get("Location")
        if response.status_code != 202 or not location:
            raise RegistryError(f"Registry '{registry}' answered {response.status_code} without an upload location")
        url = httpx.URL(registry_base_url(registry, self.client.insecure)).join(location)
        if url.netloc.decode() != urlsplit(registry_base_url(registry, self.client.insecure)).netloc:
            self.client.check_destination(url.netloc.decode())
        return str(url)

    def _request(self, method: str, registry: str, repository: str, path: str, *, mount_from: str | None = None,
                 content: bytes | None = None, headers: dict[str, str] | None = None) -> httpx.Response:  # fmt: skip
        url = registry_base_url(registry, self.client.insecure) + path
        return self._request_url(method, registry, repository, url, mount_from=mount_from, content=content,
                                 headers=headers)  # fmt: skip

    def _request_url(
        self, method: str, registry: str, repository: str, url: str, *, mount_from: str | None = None,
        content: bytes | None = None, headers: dict[str, str] | None = None,
    ) -> httpx.Response:  # fmt: skip
        """One request with push authorization; on a 401 the token is fetched again and the request sent once
        more (bodies are bytes: they can be sent again)."""
        self.client.check_destination(registry)
        response = None
        for fresh in (False, True):
            request_headers = dict(headers or {})
            authorization = self._authorization(registry, repository, mount_from, fresh=fresh)
            if authorization:
                request_headers["Authorization"] = authorization
            try:
                response = self.client.http.request(method, url, headers=request_headers, content=content)
            except httpx.HTTPError as exc:
                raise RegistryUnavailableError(f"Registry '{registry}' is unreachable: {type(exc).__name__}") from None
            if response.status_code != 401:
                break
        assert response is not None
        return response

    def _authorization(self, registry: str, repository: str, mount_from: str | None, *, fresh: bool) -> str | None:
        challenge = self.client._challenge(registry, fresh=fresh)
        credentials = self.client.credentials(registry)
        if challenge.scheme == "anonymous":
            return None
        if challenge.scheme == "basic":
            return credentials.basic_header() if credentials else None
        key = (registry, repository, mount_from or "")
        if fresh or key not in self._tokens:
            scopes = [f"repository:{repository}:pull,push"]
            if mount_from:
                scopes.append(f"repository:{mount_from}:pull")
            self._tokens[key] = self._push_token(registry, challenge, scopes, credentials)
        return f"Bearer {self._tokens[key]}"

    def _push_token(self, registry: str, challenge: Challenge, scopes: list[str],
                    credentials: Credentials | None) -> str:  # fmt: skip
        """A token for `scopes` from the registry's token service (never cached beyond this pusher)."""
        self.client._check_realm(challenge, registry)
        params: list[tuple[str, str | int | float | bool | None]] = [("scope", scope) for scope in scopes]
        if challenge.service:
            params.append(("service", challenge.service))
        headers = {"Authorization": credentials.basic_header()} if credentials else {}
        try:
            url = str(httpx.URL(challenge.realm).copy_merge_params(httpx.QueryParams(params)))
            response = self.client._send_with_retries(lambda: self.client._read_bounded("GET", url, headers))
        except httpx.InvalidURL:
            raise RegistryUnavailableError(f"Registry '{registry}' names an invalid token realm") from None
        except httpx.HTTPError as exc:
            raise RegistryUnavailableError(
                f"Token service of registry '{registry}' is unreachable: {type(exc).__name__}"
            ) from None
        if response.status_code in {401, 403}:
            raise RegistryError(f"Registry '{registry}' refused the credentials for pushing")
        try:
            body = response.json() if response.status_code == 200 else None
        except (ValueError, RecursionError):
            body = None
        token = (body.get("token") or body.get("access_token")) if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise RegistryUnavailableError(f"Token service of registry '{registry}' sent no push token")
        return token


@contextmanager
def blob_stream(client: RegistryClient, registry: str, repository: str, digest: str) -> Iterator[Iterator[bytes]]:
    """A blob's bytes as the source registry sends them (not verified here: the upload verifies), redirects
    followed without credentials and checked against the SSRF rules."""
    _check_digest(digest)
    url = registry_base_url(registry, client.insecure) + f"/v2/{repository}/blobs/{digest}"
    authorization = client.authorization(registry, repository)
    headers = {"Authorization": authorization} if authorization else {}
    try:
        response = client.http.send(client.http.build_request("GET", url, headers=headers), stream=True)
        for _hop in range(MAX_REDIRECTS):
            if not response.is_redirect:
                break
            target = response.url.join(response.headers["Location"])
            response.close()
            client.check_destination(target.netloc.decode())
            response = client.http.send(client.http.build_request("GET", target), stream=True)
    except httpx.HTTPError as exc:
        raise RegistryUnavailableError(f"Registry '{registry}' is unreachable: {type(exc).__name__}") from None
    try:
        client.raise_for_status(response, Resource(registry, repository, digest), unknown=BlobUnknownError)
        yield response.iter_bytes()
    finally:
        response.close()


# --- copying an image -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    content: bytes
    media_type: str
    digest: str

    @property
    def document(self) -> dict[str, Any]:
        try:
            value = json.loads(self.content)
        except (ValueError, RecursionError):
            value = None
        if not isinstance(value, dict):
            raise RegistryError(f"Manifest {self.digest} is not a JSON object")
        return value

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES or (not self.media_type and "manifests" in self.document)


def image_copy(
    client: RegistryClient, *, source: ImageReference, target: ImageReference, platform: Platform | None,
    log: Log, should_stop: Callable[[], bool] = lambda: False,
) -> str:  # fmt: skip
    """Copy `source` to `target` (blobs, then manifests by digest, then the tag): every platform of an index, or
    only `platform`'s image when one is named. `client` reads the source and writes the target (its lookup gives
    each registry's credentials); the digest pushed under the target's tag (or digest). Blobs already there are
    skipped; CopyStopped once `should_stop` says so."""
    writer = RegistryPusher(client)
    top = _manifest(client, source, source.version)
    log(f"Mirroring {source} ({top.digest}) to {target}\n")
    if top.is_index and platform is not None:
        entry = _platform_entry(top, platform, source)
        log(f"Platform {platform}: {entry}\n")
        top = _manifest(client, source, entry)
    children = [_manifest(client, source, digest) for digest in _index_children(top)] if top.is_index else []
    for manifest in children if top.is_index else [top]:
        _copy_blobs(client, writer, manifest, source=source, target=target, log=log, should_stop=should_stop)
    for manifest in [*children, top]:
        if should_stop():
            raise CopyStopped
        writer.manifest_put(target.registry, target.repository, manifest.digest, manifest.content,
                            manifest.media_type)  # fmt: skip
        log(f"Pushed manifest {manifest.digest} ({manifest.media_type})\n")
    if target.digest is None and target.tag:
        writer.manifest_put(target.registry, target.repository, target.tag, top.content, top.media_type)
        log(f"Tagged {target.tag}: {top.digest}\n")
    return top.digest


def _manifest(client: RegistryClient, ref: ImageReference, reference: str) -> Manifest:
    content, media_type, digest = client.get_manifest(ref.registry, ref.repository, reference)
    document_type = Manifest(content, "", digest).document.get("mediaType")
    media_type = document_type if isinstance(document_type, str) and document_type else media_type
    if media_type not in MANIFEST_MEDIA_TYPES or media_type == "application/json":
        media_type = (
            "application/vnd.oci.image.index.v1+json"
            if "manifests" in Manifest(content, "", digest).document
            else "application/vnd.oci.image.manifest.v1+json"
        )
    return Manifest(content, media_type, digest)


def _index_children(index: Manifest) -> list[str]:
    entries = index.document.get("manifests")
    digests = [entry.get("digest") for entry in entries if isinstance(entry, dict)] if isinstance(entries, list) else []
    valid = [str(digest) for digest in digests if is_digest(digest)]
    if not valid or len(valid) != len(digests):
        raise RegistryError(f"Index {index.digest} names no valid manifests")
    return list(dict.fromkeys(valid))


def _platform_entry(index: Manifest, platform: Platform, source: ImageReference) -> str:
    for entry in index.document.get("manifests") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("platform"), dict):
            continue
        if platform.matches(entry["platform"]) and is_digest(entry.get("digest")):
            return str(entry["digest"])
    raise RegistryError(f"Container image '{source}' is not available for platform '{platform}'")


def _blobs_of(manifest: Manifest) -> list[Blob]:
    document = manifest.document
    layers = document.get("layers")
    descriptors = [document.get("config"), *(layers if isinstance(layers, list) else [])]
    blobs = []
    for descriptor in descriptors:
        if not isinstance(descriptor, dict):
            continue
        digest, size = descriptor.get("digest"), descriptor.get("size")
        if not is_digest(digest) or not isinstance(size, int) or size < 0:
            raise RegistryError(f"Manifest {manifest.digest} names a blob without a valid digest or size")
        blobs.append(Blob(digest=str(digest), size=size))
    return blobs


def _copy_blobs(client: RegistryClient, writer: RegistryPusher, manifest: Manifest, *, source: ImageReference,
                target: ImageReference, log: Log, should_stop: Callable[[], bool]) -> None:  # fmt: skip
    for blob in _blobs_of(manifest):
        if should_stop():
            raise CopyStopped
        if writer.blob_exists(target.registry, target.repository, blob.digest):
            log(f"Blob {blob.digest} already there\n")
            continue
        location = None
        if source.registry == target.registry:
            location = writer.blob_mount(target.registry, target.repository, blob.digest,
                                         source_repository=source.repository)  # fmt: skip
            if location is None:
                log(f"Mounted blob {blob.digest} from {source.repository}\n")
                continue
        with blob_stream(client, source.registry, source.repository, blob.digest) as chunks:
            writer.blob_upload(target.registry, target.repository, blob, chunks, location=location)
        log(f"Copied blob {blob.digest} ({blob.size} bytes)\n")


# --- helpers -----------------------------------------------------------------------------------------------------


def _check_digest(digest: str) -> None:
    if not is_digest(digest):
        raise RegistryError(f"Refusing blob '{digest[:80]}': not a digest")


def _verify(data: bytes, blob: Blob) -> None:
    if len(data) != blob.size or "sha256:" + hashlib.sha256(data).hexdigest() != blob.digest:
        raise RegistryError(f"Blob {blob.digest} does not match its digest or size: not pushed")


def _with_digest(location: str, digest: str) -> str:
    return str(httpx.URL(location).copy_merge_params({"digest": digest}))


def _chunked(chunks: Iterator[bytes], size: int) -> Iterator[bytes]:
    """The stream regrouped in pieces of `size` bytes (the last one shorter)."""
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        yield bytes(buffer)
