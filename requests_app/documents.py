"""Documents the proxy generates (configs, manifests, indexes): stored by digest, cached in Redis.

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


def document_put(document: Document) -> None:
    blob_store_put(document.digest, document.content)
    # A concurrent insert of the same digest means the same bytes: nothing to do.
    with contextlib.suppress(IntegrityError):
        GeneratedDocument.objects.get_or_create(
            digest=document.digest, defaults={"media_type": document.media_type, "size": document.size}
        )
    shared_cache().set(f"wave:doc:{document.digest}", (document.media_type, document.content), CACHE_TTL)


def document_get(digest: str) -> tuple[bytes, str] | None:
    """(content, media type) of a generated document, or None when the proxy did not generate it."""
    cached = shared_cache().get(f"wave:doc:{digest}")
    if cached is not None:
        media_type, content = cached
        return content, media_type
    row = GeneratedDocument.objects.filter(digest=digest).first()
    if row is None:
        return None
    try:
        content = blob_read(blob_key(digest))
    except FileNotFoundError:  # the store lost it: as if never generated (pulls by tag generate it again)
        return None
    shared_cache().set(f"wave:doc:{digest}", (row.media_type, content), CACHE_TTL)
    return content, row.media_type
