"""The registry proxy's service layer: resolve a token, build the manifest to serve, locate a blob."""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.conf import settings

from credentials.clients import registry_client
from registry.augment import (
    INDEX_TYPES,
    MANIFEST_TYPES,
    AugmentError,
    ContainerConfig,
    Document,
    InjectedLayerRef,
    augment_image_manifest,
    augment_index,
    media_type_of,
)
from registry.client import (
    ManifestUnknownError,
    RegistryDeniedError,
    RegistryError,
    RegistryUnauthorizedError,
    RegistryUnavailableError,
)
from registry.platform import InvalidPlatformError, parse_platform
from registry.reference import parse_image
from registry.ssrf import DestinationRefusedError
from requests_app.documents import document_get, document_put
from requests_app.models import ContainerRequest, InjectedLayer
from requests_app.ratelimit import rate_limit_acquire
from wave_site.cache import shared_cache
from wave_site.errors import TooManyRequests

TOKEN_CACHE_TTL = 30
TAG_CACHE_TTL = 5


class ProxyError(Exception):
    """An OCI error: `code` from the distribution spec, `status` its HTTP status."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


@dataclass(frozen=True)
class ProxyTarget:
    """What a token authorises, cached briefly; layer states are read from the database when needed."""

    pk: int
    token: str
    registry: str
    repository: str
    source_version: str
    platform: str
    expires_at: float
    config: ContainerConfig
    layer_digests: frozenset[str]

    @property
    def is_augmented(self) -> bool:
        return not self.config.is_empty


def _target_from(request: ContainerRequest) -> ProxyTarget:
    ref = parse_image(request.source_image)
    stored = request.container_config or {}
    layers = list(request.layers.all())
    config = ContainerConfig(
        entrypoint=stored.get("entrypoint"),
        cmd=stored.get("cmd"),
        env=tuple(stored.get("env") or ()),
        working_dir=stored.get("workingDir"),
        layers=tuple(InjectedLayerRef(la.gzip_digest, la.gzip_size, la.tar_digest) for la in layers),
    )
    return ProxyTarget(
        pk=request.pk,
        token=request.token,
        registry=ref.registry,
        repository=ref.repository,
        source_version=ref.version,
        platform=request.platform,
        expires_at=request.expires_at.timestamp(),
        config=config,
        layer_digests=frozenset(la.gzip_digest for la in layers),
    )


def is_revoked(token: str) -> bool:
    return shared_cache().get(f"wave:revoked:{token}") is not None


def owned_digests(target: ProxyTarget) -> frozenset[str]:
    """Digests of the documents generated for this request (no other token may read them)."""
    key = f"wave:owns:{target.token}"
    owned = shared_cache().get(key)
    if not isinstance(owned, frozenset):
        stored = ContainerRequest.objects.filter(pk=target.pk).values_list("generated_digests", flat=True).first()
        owned = frozenset(stored or ())
        shared_cache().set(key, owned, settings.WAVE_TOKEN_TTL)
    return owned


def _record_generated(target: ProxyTarget, digests: list[str]) -> None:
    owned = set(owned_digests(target)) | set(digests)
    ContainerRequest.objects.filter(pk=target.pk).update(generated_digests=sorted(owned))
    shared_cache().set(f"wave:owns:{target.token}", frozenset(owned), settings.WAVE_TOKEN_TTL)


def resolve_token(token: str, name: str) -> ProxyTarget:
    """The active request for a token whose image path is `name`; OCI errors otherwise."""
    key = f"wave:token:{token}"
    target = None if is_revoked(token) else shared_cache().get(key)
    if not isinstance(target, ProxyTarget):
        request = (
            ContainerRequest.objects.filter(token=token, revoked_at__isnull=True).prefetch_related("layers").first()
        )
        target = _target_from(request) if request is not None else None
        if target is not None and not is_revoked(token):  # a revocation may have landed meanwhile
            shared_cache().set(key, target, TOKEN_CACHE_TTL)
    if target is None or target.expires_at <= time.time():
        raise ProxyError(404, "NAME_UNKNOWN", f"Unknown Wave container for token '{token}'")
    if name != target.repository:
        raise ProxyError(404, "NAME_UNKNOWN", f"Image path '{name}' does not match the image of token '{token}'")
    return target


def _upstream_error(exc: Exception) -> ProxyError:
    if isinstance(exc, DestinationRefusedError):
        return ProxyError(400, "DENIED", exc.message)
    if isinstance(exc, ManifestUnknownError):
        return ProxyError(404, "MANIFEST_UNKNOWN", exc.message)
    if isinstance(exc, RegistryUnauthorizedError):
        return ProxyError(401, "UNAUTHORIZED", exc.message, {"WWW-Authenticate": 'Basic realm="wave"'})
    if isinstance(exc, RegistryDeniedError):
        return ProxyError(403, "DENIED", exc.message)
    if isinstance(exc, RegistryUnavailableError):
        if " 429 " in exc.message:
            return ProxyError(429, "TOOMANYREQUESTS", exc.message, {"Retry-After": "10"})
        return ProxyError(503, "UNAVAILABLE", exc.message)
    if isinstance(exc, AugmentError):
        return ProxyError(400, "UNKNOWN", exc.message)
    assert isinstance(exc, RegistryError)
    return ProxyError(500, "UNKNOWN", exc.message)


def wait_for_layers(target: ProxyTarget) -> None:
    """Block (bounded) while injected layers download; a failed layer fails the pull, naming it."""
    if not target.layer_digests:
        return
    deadline = time.monotonic() + settings.WAVE_LAYER_WAIT_SECONDS
    while True:
        states = list(
            InjectedLayer.objects.filter(request_id=target.pk).values_list(
                "position", "gzip_digest", "state", "failure_reason"
            )
        )
        failed = [row for row in states if row[2] == InjectedLayer.State.FAILED]
        if failed:
            position, digest, _, reason = failed[0]
            raise ProxyError(400, "UNKNOWN", f"Container layer {position} ({digest}) failed: {reason}")
        if all(row[2] == InjectedLayer.State.READY for row in states):
            return
        if time.monotonic() > deadline:
            raise ProxyError(503, "UNAVAILABLE", "Container layers are still downloading, retry later",
                             {"Retry-After": "5"})  # fmt: skip
        time.sleep(0.25)


def _record_digests(target: ProxyTarget, source_digest: str, wave_digest: str) -> None:
    ContainerRequest.objects.filter(pk=target.pk).exclude(wave_digest=wave_digest).update(
        source_digest=source_digest, wave_digest=wave_digest
    )


def count_pull(client_key: str) -> None:
    try:
        rate_limit_acquire(kind="pull", key=client_key)
    except TooManyRequests as exc:
        raise ProxyError(429, "TOOMANYREQUESTS", exc.message, exc.headers) from None


SERVED_TTL = 5


def _served_key(token: str, name: str, reference: str) -> str:
    return f"wave:served:{token}:{name}:{reference}"


def served_recently(token: str, name: str, reference: str) -> Document | None:
    """What this exact URL served in the last few seconds (one cache read: the hottest path)."""
    found = shared_cache().get(_served_key(token, name, reference))
    if not isinstance(found, tuple) or found[0] <= time.time():
        return None
    return Document(found[2], found[1])


def remember_served(token: str, name: str, reference: str, document: Document, *, expires_at: float) -> None:
    # Short-lived, so that revocation (which also deletes these) and tag moves take effect within seconds.
    entry = (expires_at, document.media_type, document.content)
    shared_cache().set(_served_key(token, name, reference), entry, SERVED_TTL)


def forget_served(token: str) -> None:
    cache = shared_cache()
    if hasattr(cache, "delete_pattern"):  # django-redis; elsewhere entries expire within SERVED_TTL
        cache.delete_pattern(f"wave:served:{token}:*")


def cached_manifest(token: str, name: str, reference: str) -> tuple[Document, float] | None:
    """The manifest to serve when every piece is already in the cache (no database, no upstream call).

    This is the hot path of a pipeline pulling one image many times; None means "take the full path".
    """
    cache = shared_cache()
    target = cache.get(f"wave:token:{token}")
    if not isinstance(target, ProxyTarget) or target.expires_at <= time.time() or name != target.repository:
        return None
    if is_revoked(token):
        return None
    if reference.startswith("sha256:"):
        owned = cache.get(f"wave:owns:{token}")
        if not isinstance(owned, frozenset) or reference not in owned:
            found = cache.get(f"wave:manifest:{target.registry}/{target.repository}:{reference}")
            return (Document(found[1], found[0]), target.expires_at) if isinstance(found, tuple) else None
        digest: object = reference
    elif not target.is_augmented:
        upstream = cache.get(f"wave:tag:{target.registry}/{target.repository}:{reference}")
        found = cache.get(f"wave:manifest:{target.registry}/{target.repository}:{upstream}") if upstream else None
        return (Document(found[1], found[0]), target.expires_at) if isinstance(found, tuple) else None
    else:
        upstream = cache.get(f"wave:tag:{target.registry}/{target.repository}:{reference}")
        digest = cache.get(f"wave:augmented:{token}:{upstream}") if isinstance(upstream, str) else None
    if not isinstance(digest, str):
        return None
    stored = cache.get(f"wave:doc:{digest}")
    return (Document(stored[1], stored[0]), target.expires_at) if isinstance(stored, tuple) else None


def manifest_for(target: ProxyTarget, reference: str) -> Document:
    """The manifest (or index) to serve for `reference` (a tag or a digest)."""
    if reference.startswith("sha256:") and reference in owned_digests(target):
        stored = document_get(reference)
        if stored is not None:
            return Document(stored[0], stored[1])
    client = registry_client()
    try:
        if not target.is_augmented or reference.startswith("sha256:"):
            # Unchanged bytes: the same digest as upstream (also for entries an index left untouched).
            return _upstream_manifest(target, reference)
        wait_for_layers(target)
        upstream_digest = _resolve_tag(target, reference)
        cache_key = f"wave:augmented:{target.token}:{upstream_digest}"
        served_digest = shared_cache().get(cache_key)
        if isinstance(served_digest, str) and served_digest in owned_digests(target):
            stored = document_get(served_digest)
            if stored is not None:
                return Document(stored[0], stored[1])
        content, declared, _ = client.get_manifest(target.registry, target.repository, upstream_digest)
        media_type = media_type_of(content, declared)

        def fetch_blob(digest: str) -> bytes:
            return client.get_blob(target.registry, target.repository, digest)

        def fetch_manifest(digest: str) -> tuple[bytes, str]:
            entry, entry_type, _ = client.get_manifest(target.registry, target.repository, digest)
            return entry, entry_type

        if media_type in INDEX_TYPES:
            result = augment_index(content, media_type, parse_platform(target.platform), target.config,
                                   fetch_manifest, fetch_blob)  # fmt: skip
        elif media_type in MANIFEST_TYPES:
            result = augment_image_manifest(content, media_type, target.config, fetch_blob)
        else:
            raise ProxyError(400, "MANIFEST_INVALID", f"Unsupported manifest type '{media_type}'")
    except InvalidPlatformError as exc:  # stored by an earlier version that accepted more platforms
        raise ProxyError(400, "UNKNOWN", exc.message) from None
    except (RegistryError, DestinationRefusedError, AugmentError) as exc:
        raise _upstream_error(exc) from None
    for document in result.generated:
        document_put(document)
    _record_generated(target, [document.digest for document in result.generated])
    shared_cache().set(cache_key, result.served.digest, settings.WAVE_TOKEN_TTL)
    _record_digests(target, upstream_digest, result.served.digest)
    return result.served


def _upstream_manifest(target: ProxyTarget, reference: str) -> Document:
    """An upstream manifest as is: a tag is resolved by HEAD (cached briefly), the bytes fetched by digest
    (cached for as long as a token lives: the digest names them). HEADs do not count as pulls upstream."""
    digest = _resolve_tag(target, reference)
    key = f"wave:manifest:{target.registry}/{target.repository}:{digest}"
    cached = shared_cache().get(key)
    if isinstance(cached, tuple):
        document = Document(cached[1], cached[0])
    else:
        content, declared, _ = registry_client().get_manifest(target.registry, target.repository, digest)
        document = Document(content, media_type_of(content, declared))
        # (media type, bytes), as generated documents are cached
        shared_cache().set(key, (document.media_type, document.content), settings.WAVE_TOKEN_TTL)
    if not target.is_augmented and not reference.startswith("sha256:"):
        _record_digests(target, digest, digest)  # the image's own digest, not an index entry's
    return document


def _resolve_tag(target: ProxyTarget, reference: str) -> str:
    """The upstream digest for a tag (briefly cached: many clients pull the same tag at once)."""
    if reference.startswith("sha256:"):
        return reference
    key = f"wave:tag:{target.registry}/{target.repository}:{reference}"
    cached = shared_cache().get(key)
    if isinstance(cached, str):
        return cached
    info = registry_client().head_manifest(parse_image(f"{target.registry}/{target.repository}:{reference}"))
    shared_cache().set(key, info.digest, TAG_CACHE_TTL)
    return info.digest


def injected_layer_key(target: ProxyTarget, digest: str) -> str | None:
    """Blob-store key of an injected layer of this request (ready ones only), else None."""
    if digest not in target.layer_digests:
        return None
    layer = (
        InjectedLayer.objects.filter(request_id=target.pk, gzip_digest=digest, state=InjectedLayer.State.READY)
        .only("blob_key")
        .first()
    )
    if layer is None:
        raise ProxyError(404, "BLOB_UNKNOWN", f"Container layer {digest} is not available (yet)")
    return layer.blob_key
