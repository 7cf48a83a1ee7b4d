"""The source image of a request, checked upstream when it is accepted: its digest and its platforms.

The digest comes from a HEAD with the resolved credentials, cached briefly (a tag moves). An index names
its entries' platforms; a single image's platform is in its config blob. Both are fetched with the same
client; the platforms are cached with the manifest digest they describe (content that never changes),
so they are fetched again only when the tag moved.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings

from credentials.clients import registry_client, registry_errors_answered
from registry.augment import INDEX_TYPES, MANIFEST_TYPES, AugmentError, media_type_of
from registry.client import RegistryClient
from registry.platform import Platform
from registry.reference import SHA256_DIGEST, ImageReference
from requests_app.oci.manifests import upstream_check_key
from wave_site.cache import shared_cache
from wave_site.errors import InvalidRequest
from wave_site.redact import redact_url

# Index entries that are not images of a platform: BuildKit's attestation manifests say `unknown/unknown`.
NOT_A_PLATFORM = "unknown"


def platforms_key(ref: ImageReference, *, identity: str) -> str:
    """Cache key of the platforms the source offers: `(manifest digest, is an index, platforms)`."""
    return f"wave:upstream:platforms:{ref}:{identity}"


def _platform_of(value: object) -> dict[str, str] | None:
    """An index entry's `platform` (or an image config's os/architecture/variant) as plain strings."""
    if not isinstance(value, dict):
        return None
    os_name, architecture, variant = value.get("os"), value.get("architecture"), value.get("variant")
    if not isinstance(os_name, str) or not isinstance(architecture, str) or os_name == NOT_A_PLATFORM:
        return None
    platform = {"os": os_name, "architecture": architecture}
    if isinstance(variant, str) and variant:
        platform["variant"] = variant
    return platform


def platform_name(platform: dict[str, str]) -> str:
    return "/".join(filter(None, (platform["os"], platform["architecture"], platform.get("variant"))))


def _fetch_platforms(client: RegistryClient, ref: ImageReference, digest: str) -> tuple[bool, list[dict[str, str]]]:
    """(is an index, the platforms it offers); an empty list when the documents do not say."""
    content, declared, _ = client.get_manifest(ref.registry, ref.repository, digest)
    try:
        media_type = media_type_of(content, declared)
        document: Any = json.loads(content)
    except (AugmentError, ValueError, RecursionError):
        return False, []
    if not isinstance(document, dict):
        return False, []
    if media_type in INDEX_TYPES:
        entries = document.get("manifests")
        found = (
            [_platform_of(entry.get("platform")) for entry in entries if isinstance(entry, dict)]
            if isinstance(entries, list)
            else []
        )
        return True, [platform for platform in found if platform is not None]
    config = document.get("config")
    config_digest = config.get("digest") if isinstance(config, dict) else None
    if (
        media_type not in MANIFEST_TYPES
        or not isinstance(config_digest, str)
        or not SHA256_DIGEST.fullmatch(config_digest)
    ):
        return False, []
    try:
        image_config: Any = json.loads(client.get_blob(ref.registry, ref.repository, config_digest))
    except (ValueError, RecursionError):
        return False, []
    platform = _platform_of(image_config)
    return False, [platform] if platform is not None else []


def _offered_platforms(client: RegistryClient, ref: ImageReference, digest: str, cached: object, *, key: str,
                       shown_name: str) -> tuple[bool, list[dict[str, str]]]:  # fmt: skip
    """(is an index, its platforms) of the manifest `digest`: the cached answer when it is about that digest."""
    if isinstance(cached, tuple) and len(cached) == 3 and cached[0] == digest:
        return cached[1], cached[2]
    with registry_errors_answered(shown_name):
        is_index, platforms = _fetch_platforms(client, ref, digest)
    shared_cache().set(key, (digest, is_index, platforms), settings.WAVE_TOKEN_TTL)
    return is_index, platforms


def upstream_check(
    ref: ImageReference, *, shown_name: str, platform: Platform | None, named: bool = False,
    client: RegistryClient | None = None,
) -> str:  # fmt: skip
    """The source manifest's digest (HEAD upstream with the caller's credentials, `client`, the service's by
    default; cached briefly: a tag moves); with `platform`, refuse one the image does not offer, naming those
    it does. Cached answers are keyed by the credentials' identity: another caller never reads them.

    A platform the client did not name (`named` false) is only checked against an index (the proxy must
    find it there to augment); a single image is served as it is. Images whose documents name no platform
    pass. A cached answer costs one cache round trip, both keys read at once. `shown_name` is quoted by
    messages without its credentials (wave_site.redact).
    """
    shown_name = redact_url(shown_name)
    client = client or registry_client()
    with registry_errors_answered(shown_name):
        identity = client.identity(ref.registry)
    digest_key = upstream_check_key(ref, identity=identity)
    offered_key = platforms_key(ref, identity=identity)
    cached = shared_cache().get_many([digest_key, offered_key] if platform is not None else [digest_key])
    digest = cached.get(digest_key)
    if not isinstance(digest, str):
        with registry_errors_answered(shown_name):
            digest = client.head_manifest(ref).digest
        shared_cache().set(digest_key, digest, settings.WAVE_UPSTREAM_CACHE_TTL)
    if platform is None:
        return digest
    manifest_digest = ref.digest or digest
    is_index, platforms = _offered_platforms(
        client, ref, manifest_digest, cached.get(offered_key), key=offered_key, shown_name=shown_name
    )
    if not platforms or (not named and not is_index) or any(platform.matches(offered) for offered in platforms):
        return digest
    names = ", ".join(dict.fromkeys(platform_name(offered) for offered in platforms))
    raise InvalidRequest(
        f"Container image '{shown_name}' is not available for platform '{platform}' - available platforms: {names}"
    )
