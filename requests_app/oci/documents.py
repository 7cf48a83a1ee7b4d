"""Documents the proxy generates (configs, manifests, indexes): stored by digest, cached, and their cache key.

Every web process serves the same bytes for a digest because the bytes live in the shared blob store;
the cache only saves a read.
"""

from __future__ import annotations

import contextlib

from django.db import IntegrityError

from registry.augment import Document
from requests_app.models import GeneratedDocument
from wave_site.blobstore import blob_key, blob_read, blob_store_put
from wave_site.cache import shared_cache

CACHE_TTL = 3600


def document_key(digest: str) -> str:
    """Cache key of a generated document: `(media type, bytes)`."""
    return f"wave:doc:{digest}"


def document_put(document: Document) -> None:
    blob_store_put(document.digest, document.content)
    # A concurrent insert of the same digest means the same bytes: nothing to do.
    with contextlib.suppress(IntegrityError):
        GeneratedDocument.objects.get_or_create(
            digest=document.digest, defaults={"media_type": document.media_type, "size": document.size}
        )
    shared_cache().set(document_key(document.digest), (document.media_type, document.content), CACHE_TTL)


def document_from_cache(entry: object) -> Document | None:
    """A document from its cache entry (None for a miss)."""
    if not isinstance(entry, tuple):
        return None
    media_type, content = entry
    return Document(content, media_type)


def document_get(digest: str) -> Document | None:
    """A generated document, or None when the proxy did not generate it (or the store lost it)."""
    cached = document_from_cache(shared_cache().get(document_key(digest)))
    if cached is not None:
        return cached
    row = GeneratedDocument.objects.filter(digest=digest).first()
    if row is None:
        return None
    try:
        content = blob_read(blob_key(digest))
    except FileNotFoundError:  # the store lost it: as if never generated (pulls by tag generate it again)
        return None
    shared_cache().set(document_key(digest), (row.media_type, content), CACHE_TTL)
    return Document(content, row.media_type)
