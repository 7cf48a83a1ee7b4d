"""What the proxy serves for a manifest reference, and the cache keys of that data: upstream resolution
(tags to digests, documents by digest), augmentation and its cache, the served-manifest memory, the
documents a token owns, and tag lists.

Upstream entries are keyed by the credentials identity they were fetched with, so that callers with
other credentials never read them. `manifest_to_serve` answers a hot pull on the event loop (async Redis
reads); everything past that is synchronous (database, cache and upstream calls) and runs with one hop to
the request's thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections

from builds.models import Build
from builds.selectors import build_page_url
from builds.services import target_exists
from registry.augment import (
    INDEX_TYPES,
    MANIFEST_TYPES,
    Augmented,
    Document,
    augment_image_manifest,
    augment_index,
    media_type_of,
)
from registry.client import is_digest
from registry.platform import parse_platform
from registry.reference import TAG, ImageReference, parse_image
from requests_app.models import ContainerRequest, InjectedLayer
from requests_app.oci.documents import document_from_cache, document_get, document_key, document_put
from requests_app.oci.errors import (
    BuildFailed,
    BuildPending,
    DigestInvalid,
    LayerFailed,
    LayersPending,
    ManifestNotFound,
    ReferenceInvalid,
    UnsupportedManifest,
)
from requests_app.oci.tokens import ProxyTarget, acached_target, load_target, registry_client_for, resolve_token
from requests_app.ratelimit import rate_limit_aacquire, rate_limit_acquire
from wave_site.cache import shared_cache
from wave_site.metrics.prometheus import pull_count
from wave_site.metrics.usage import UsageKind, usage_acount, usage_count

TAG_CACHE_TTL = 5
SERVED_TTL = 5  # short, so that tag moves show within seconds (revocation is checked on every read)
LAYER_POLL_SECONDS = 0.25
BUILD_POLL_SECONDS = 0.5


def served_key(token: str, name: str, reference: str) -> str:
    return f"wave:served:{token}:{name}:{reference}"


def owned_key(token: str) -> str:
    return f"wave:owns:{token}"


def augmented_key(token: str, upstream_digest: str) -> str:
    return f"wave:augmented:{token}:{upstream_digest}"


def tag_key(registry: str, repository: str, tag: str, *, identity: str) -> str:
    return f"wave:tag:{registry}/{repository}:{tag}:{identity}"


def manifest_key(registry: str, repository: str, digest: str, *, identity: str) -> str:
    return f"wave:manifest:{registry}/{repository}:{digest}:{identity}"


def upstream_check_key(ref: ImageReference, *, identity: str) -> str:
    """Cache key of the upstream check made when a request is accepted (its source's digest)."""
    return f"wave:upstream:manifest:{ref}:{identity}"


def check_reference(reference: str) -> None:
    """A tag or a well-formed digest, else DigestInvalid / ReferenceInvalid (before any other work)."""
    if ":" in reference:
        if not is_digest(reference):
            raise DigestInvalid(f"Invalid manifest digest '{reference[:160]}'")
    elif not TAG.fullmatch(reference):
        raise ReferenceInvalid(f"Invalid manifest reference '{reference[:160]}'")


async def manifest_to_serve(*, token: str, name: str, reference: str, client_ip: str | None) -> Document:
    """The manifest (or index) a pull of `reference` gets; counts the pull against the limit of the Tower
    user who asked for the container, else of the pulling address.

    Hot path, on the event loop without a thread hop: one cache round trip (target, revocation mark and
    what this URL served in the last seconds) and one counter increment (two for a tag: a pull starts with
    its tag, and counts in the usage metrics then). Otherwise one hop to the request's thread for the rest:
    the cache alone, then the database and upstream.
    """
    memory = served_key(token, name, reference)
    target, found = await acached_target(token, name, memory)
    document = None
    if target is not None:
        await rate_limit_aacquire(kind="pull", key=target.rate_limit_key(client_ip))
        document = document_from_cache(found.get(memory))
        if document is not None and not is_digest(reference):
            await usage_acount(kind=UsageKind.PULLS, email=_email_of(target), platform=target.platform)
            pull_count(target.platform)
    if document is None:
        for _round in range(3):  # the build, then the layers: each awaited with the request's thread let go
            found_or_wait = await sync_to_async(_manifest_uncached)(
                target, token=token, name=name, reference=reference, client_ip=client_ip
            )
            if not isinstance(found_or_wait, Waiting):
                break
            target = found_or_wait.target  # loaded and counted
            await inputs_awaited(found_or_wait)
        else:
            raise BuildPending("Container image is still being prepared, retry later", retry_after=5)
        document = found_or_wait
    if is_digest(reference) and document.digest != reference:
        raise ManifestNotFound(f"Manifest {reference} not found")
    return document


@dataclass(frozen=True)
class Waiting:
    """What a pull waits for before its manifest can be made: the build of its image, its injected layers."""

    target: ProxyTarget
    build: bool  # (else the layers)


def _manifest_uncached(
    target: ProxyTarget | None, *, token: str, name: str, reference: str, client_ip: str | None
) -> Document | Waiting:
    """`manifest_to_serve` past the served-manifest memory; `target` is the checked cached one (the pull
    already counted), else None (loaded here, then counted). While the image is being built or its layers
    downloaded: what to wait for, the database connection given back (the wait must hold none)."""
    if target is None:
        target = load_target(token, name)
        rate_limit_acquire(kind="pull", key=target.rate_limit_key(client_ip))
    build = bool(target.build_id) and not build_ready(target)
    if build or (target.is_augmented and not is_digest(reference) and not layers_ready(target)):
        connections_released()  # back to the pool while the pull waits
        return Waiting(target=target, build=build)
    document = cached_manifest(target, reference) or manifest_for(target, reference)
    shared_cache().set(served_key(token, name, reference), (document.media_type, document.content), SERVED_TTL)
    if not is_digest(reference):
        usage_count(kind=UsageKind.PULLS, email=_email_of(target), platform=target.platform)
        pull_count(target.platform)
    return document


def _email_of(target: ProxyTarget) -> str:
    """The requester's e-mail; a target cached by the previous release (for seconds) has none."""
    return getattr(target, "user_email", "")


def cached_manifest(target: ProxyTarget, reference: str) -> Document | None:
    """The manifest to serve when every piece is already in the cache (no database, no upstream call);
    None means "take the full path". `target` has been checked."""
    cache = shared_cache()
    identity = registry_client_for(target).identity(target.registry)
    if is_digest(reference):
        owned = cache.get(owned_key(target.token))
        if isinstance(owned, frozenset) and reference in owned:
            return _manifest_only(document_from_cache(cache.get(document_key(reference))), reference)
        key = manifest_key(target.registry, target.repository, reference, identity=identity)
        return document_from_cache(cache.get(key))
    upstream = cache.get(tag_key(target.registry, target.repository, reference, identity=identity))
    if not isinstance(upstream, str):
        return None
    if not target.is_augmented:
        key = manifest_key(target.registry, target.repository, upstream, identity=identity)
        return document_from_cache(cache.get(key))
    digest = cache.get(augmented_key(target.token, upstream))
    return document_from_cache(cache.get(document_key(digest))) if isinstance(digest, str) else None


def manifest_for(target: ProxyTarget, reference: str) -> Document:
    """The manifest (or index) to serve for `reference` (a tag or a digest): the full path."""
    if is_digest(reference) and reference in owned_digests(target):
        stored = _manifest_only(document_get(reference), reference)
        if stored is not None:
            return stored
    if not target.is_augmented or is_digest(reference):
        # Unchanged bytes: the same digest as upstream (also for entries an index left untouched).
        return _upstream_manifest(target, reference)
    if not layers_ready(target):  # awaited before (inputs_awaited): only a direct caller gets here early
        raise LayersPending("Container layers are still downloading, retry later", retry_after=5)
    upstream_digest = _resolve_tag(target, reference)
    key = augmented_key(target.token, upstream_digest)
    served_digest = shared_cache().get(key)
    if isinstance(served_digest, str) and served_digest in owned_digests(target):
        stored = document_get(served_digest)
        if stored is not None:
            return stored
    result = _augment(target, upstream_digest)
    for document in result.generated:
        document_put(document)
    _record_generated(target, [document.digest for document in result.generated])
    shared_cache().set(key, result.served.digest, settings.WAVE_TOKEN_TTL)
    _record_digests(target, upstream_digest, result.served.digest)
    return result.served


def _manifest_only(document: Document | None, reference: str) -> Document | None:
    """A generated document as a manifest: configs are generated too, but served only as blobs."""
    if document is not None and document.media_type not in MANIFEST_TYPES | INDEX_TYPES:
        raise ManifestNotFound(f"Manifest {reference} not found")
    return document


def _augment(target: ProxyTarget, upstream_digest: str) -> Augmented:
    client = registry_client_for(target)
    content, declared, _ = client.get_manifest(target.registry, target.repository, upstream_digest)
    media_type = media_type_of(content, declared)

    def fetch_blob(digest: str) -> bytes:
        return client.get_blob(target.registry, target.repository, digest)

    def fetch_manifest(digest: str) -> tuple[bytes, str]:
        entry, entry_type, _ = client.get_manifest(target.registry, target.repository, digest)
        return entry, entry_type

    if media_type in INDEX_TYPES:
        platform = parse_platform(target.platform)
        return augment_index(content, media_type, platform, target.config, fetch_manifest, fetch_blob)
    if media_type in MANIFEST_TYPES:
        return augment_image_manifest(content, media_type, target.config, fetch_blob)
    raise UnsupportedManifest(f"Unsupported manifest type '{media_type}'")


def _upstream_manifest(target: ProxyTarget, reference: str) -> Document:
    """An upstream manifest as is: a tag is resolved by HEAD (cached briefly), the bytes fetched by digest
    (cached for as long as a token lives: the digest names them). HEADs do not count as pulls upstream."""
    client = registry_client_for(target)
    digest = _resolve_tag(target, reference)
    key = manifest_key(target.registry, target.repository, digest, identity=client.identity(target.registry))
    document = document_from_cache(shared_cache().get(key))
    if document is None:
        content, declared, _ = client.get_manifest(target.registry, target.repository, digest)
        document = Document(content, media_type_of(content, declared))
        shared_cache().set(key, (document.media_type, document.content), settings.WAVE_TOKEN_TTL)
    if not target.is_augmented and not is_digest(reference):
        _record_digests(target, digest, digest)  # the image's own digest, not an index entry's
    return document


def _resolve_tag(target: ProxyTarget, reference: str) -> str:
    """The upstream digest for a tag (briefly cached: many clients pull the same tag at once)."""
    if is_digest(reference):
        return reference
    client = registry_client_for(target)
    key = tag_key(target.registry, target.repository, reference, identity=client.identity(target.registry))
    cached = shared_cache().get(key)
    if isinstance(cached, str):
        return cached
    info = client.head_manifest(parse_image(f"{target.registry}/{target.repository}:{reference}"))
    shared_cache().set(key, info.digest, TAG_CACHE_TTL)
    return info.digest


def layers_ready(target: ProxyTarget) -> bool:
    """Whether the injected layers are all downloaded; a failed one fails the pull, naming it."""
    if not target.layer_digests:
        return True
    states = list(
        InjectedLayer.objects.filter(request_id=target.pk).values_list("position", "gzip_digest", "state",
                                                                       "failure_reason")
    )  # fmt: skip
    failed = [row for row in states if row[2] == InjectedLayer.State.FAILED]
    if failed:
        position, digest, _, reason = failed[0]
        raise LayerFailed(f"Container layer {position} ({digest}) failed: {reason}")
    return all(row[2] == InjectedLayer.State.READY for row in states)


def build_done_key(build_id: str) -> str:
    return f"wave:build:done:{build_id}"


def build_ready(target: ProxyTarget) -> bool:
    """Whether the build that makes the image is done; a failed or cancelled one fails the pull with its reason
    and the page that shows its log, unless the image exists all the same (an earlier build pushed it: the
    request was answered `cached`)."""
    if shared_cache().get(build_done_key(target.build_id)):
        return True
    build = Build.objects.filter(build_id=target.build_id).only("state", "failure_reason", "target_image").first()
    if (
        build is None
        or build.state == Build.State.SUCCEEDED
        or (not build.is_active and target_exists(build.target_image))
    ):
        shared_cache().set(build_done_key(target.build_id), True, settings.WAVE_TOKEN_TTL)
        return True
    if not build.is_active:
        reason = build.failure_reason or build.state
        raise BuildFailed(
            f"Container image build {target.build_id} failed: {reason} - see {build_page_url(target.build_id)}"
        )
    return False


def _released(check: Callable[[ProxyTarget], bool], target: ProxyTarget) -> bool:
    """`check(target)`, its database connection back to the pool at once (the caller waits between calls)."""
    try:
        return check(target)
    finally:
        connections_released()


def connections_released() -> None:
    """This thread's database connections back to the pool, but one inside a transaction (a test's, which
    the view shares when called in-process) stays."""
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close()


async def inputs_awaited(waiting: Waiting) -> None:
    """Wait on the event loop, bounded, for the build (then the layers) a pull needs: polled, each poll a short
    hop that holds a database connection only while it reads, so that any number of clients may wait (a
    pipeline starting a hundred tasks on an image still building holds no connection of the pool)."""
    target = waiting.target
    if waiting.build:
        seconds = settings.WAVE_BUILD_TIMEOUT + settings.WAVE_BUILD_GRACE
        pending: Exception = BuildPending(
            f"Container image build {target.build_id} is still running, retry later", retry_after=30
        )
        await _polled(build_ready, target, seconds=seconds, interval=BUILD_POLL_SECONDS, pending=pending)
    else:
        pending = LayersPending("Container layers are still downloading, retry later", retry_after=5)
        seconds = settings.WAVE_LAYER_WAIT_SECONDS
        await _polled(layers_ready, target, seconds=seconds, interval=LAYER_POLL_SECONDS, pending=pending)


async def _polled(check: Callable[[ProxyTarget], bool], target: ProxyTarget, *, seconds: float, interval: float,
                  pending: Exception) -> None:  # fmt: skip
    deadline = time.monotonic() + seconds
    while not await sync_to_async(_released)(check, target):  # the request's thread: it sees what it saw
        if time.monotonic() > deadline:
            raise pending
        await asyncio.sleep(interval)


def owned_digests(target: ProxyTarget) -> frozenset[str]:
    """Digests of the documents generated for this request (no other token may read them)."""
    key = owned_key(target.token)
    owned = shared_cache().get(key)
    if not isinstance(owned, frozenset):
        stored = ContainerRequest.objects.filter(pk=target.pk).values_list("generated_digests", flat=True).first()
        owned = frozenset(stored or ())
        shared_cache().set(key, owned, settings.WAVE_TOKEN_TTL)
    return owned


def _record_generated(target: ProxyTarget, digests: list[str]) -> None:
    owned = set(owned_digests(target)) | set(digests)
    ContainerRequest.objects.filter(pk=target.pk).update(generated_digests=sorted(owned))
    shared_cache().set(owned_key(target.token), frozenset(owned), settings.WAVE_TOKEN_TTL)


def _record_digests(target: ProxyTarget, source_digest: str, wave_digest: str) -> None:
    ContainerRequest.objects.filter(pk=target.pk).exclude(wave_digest=wave_digest).update(
        source_digest=source_digest, wave_digest=wave_digest
    )


@dataclass(frozen=True)
class TagsPage:
    name: str
    tags: list[str]
    link: str | None  # the next page, through this proxy


def tags_page(*, token: str, name: str, page: dict[str, str]) -> TagsPage:
    """One page of the tags of a token's repository, as upstream lists them."""
    target = resolve_token(token, name)
    tags, link = registry_client_for(target).list_tags(target.registry, target.repository, page=page)
    if link:
        link = link.replace(f"/v2/{target.repository}/tags/list", f"/v2/wt/{token}/{name}/tags/list", 1)
    return TagsPage(name=name, tags=tags, link=link)
