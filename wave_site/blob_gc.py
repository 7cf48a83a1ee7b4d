"""Blob garbage collection: blobs nothing stored references any more are deleted, on the filesystem and on S3.

What references a blob (a row that exists, whatever its age: the purge decides how long rows live):
- `blobs/<algorithm>/<xx>/<hex>`: an injected layer of a stored request, a layer download that is not failed
  (queued and running ones are about to write it), a build's context, a stored request's generated documents
  (`generated_digests`), or a layer a pending or running freeze build's Containerfile adds (a freeze stores no
  request: nothing else names it). A GeneratedDocument row is not a reference (rows are kept forever): it goes
  with its blob, and a pull by tag generates the document again.
- `builds/<buildId>/log/<n>`: a build row of that id (the purge deletes rows only).
- `....partial-<hex>`: nothing; a write interrupted by its process dying.
Anything else in the store is never touched. Blobs modified less than WAVE_BLOB_GC_GRACE s ago are kept.

The store is listed lazily (S3: a page of 1000 keys at a time) and judged `batch_size` keys at a time: one
query per model per batch, so memory stays flat whatever the store's size.

The race with a request reusing a blob: every writer that finds a stored blob to reference it (rather than
store it again) asks through `blob_exists` or `blob_store_put`, and both first set a reuse mark on the key
in the cache (REUSE_LEASE s, longer than any check-then-reference), then wait while the collector holds its
lock on that key (wave_site.blobstore.blob_reuse_announce). The collector, for each batch of unreferenced
keys: takes the lock of each key (`add`: one collector per key), then drops the keys that carry a reuse mark,
checks the database once more, deletes, and releases its locks. A writer that set its mark before the
collector looked is seen and its blob kept; one that set it after waits for the lock to go, and then finds
the blob gone and stores it again. So a deleted blob is never one a request references or is about to.

Each pass lists the whole store anyway, so it also records the store's size (what it listed, less what it
deleted) in the shared cache for Prometheus (`blob_store_size`): measuring at scrape time would list a bucket.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import connection
from django.db.models import Q

from builds.freeze import LAYER_LINE, freeze_waiting
from builds.models import Build
from requests_app.models import ContainerRequest, GeneratedDocument, InjectedLayer, LayerDownload
from wave_site.blobstore import GC_LOCK, GC_LOCK_TTL, REUSE_MARK, blob_scratch_sweep, store_errors
from wave_site.cache import shared_cache

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 1000
S3_DELETE_LIMIT = 1000  # keys per DeleteObjects call
BLOB_KEY = re.compile(r"blobs/(?P<algorithm>[a-z0-9]+)/[0-9a-f]{2}/(?P<hex>[0-9a-f]+)")
LOG_KEY = re.compile(r"builds/(?P<build_id>[^/]+)/log/\d+")
PARTIAL_KEY = re.compile(r".+\.partial-[0-9a-f]{8}")
SCRATCH_FOLDER = "scratch"  # swept by blob_scratch_sweep
STORE_SIZE_KEY = "wave:blob-store-size"  # the last pass's totals (no expiry: a pass replaces them)


@dataclass(frozen=True)
class StoredBlob:
    key: str
    size: int
    modified: float  # seconds since the epoch


@dataclass(frozen=True)
class GcCounts:
    blobs: int = 0
    bytes: int = 0
    scratch_files: int = 0


@dataclass(frozen=True)
class StoreSize:
    """The blob store's totals as the last collection left it (scratch files aside), and when it ended."""

    blobs: int
    bytes: int
    measured_at: float  # seconds since the epoch


class _Tally:
    """Counts the blobs and bytes that pass through it."""

    def __init__(self) -> None:
        self.blobs, self.bytes = 0, 0

    def counted(self, blobs: Iterator[StoredBlob]) -> Iterator[StoredBlob]:
        for blob in blobs:
            self.blobs, self.bytes = self.blobs + 1, self.bytes + blob.size
            yield blob


def blob_store_size() -> StoreSize | None:
    """The store's size recorded by the last collection; None before the first one."""
    recorded = shared_cache().get(STORE_SIZE_KEY)
    return StoreSize(**recorded) if recorded is not None else None


def _store_size_record(*, blobs: int, size: int) -> None:
    value = {"blobs": blobs, "bytes": size, "measured_at": time.time()}
    shared_cache().set(STORE_SIZE_KEY, value, timeout=None)


def _before_delete(keys: list[str]) -> None:
    """Called between judging a batch and deleting it (a seam for tests of the race; does nothing)."""


# --- Listing ------------------------------------------------------------------------------------------------


def _filesystem_root() -> Path | None:
    try:
        return Path(default_storage.path(""))
    except NotImplementedError:
        return None


def _listed_filesystem(root: Path) -> Iterator[StoredBlob]:
    for folder, folders, files in os.walk(root):
        if Path(folder) == root and SCRATCH_FOLDER in folders:
            folders.remove(SCRATCH_FOLDER)
        for name in files:
            path = Path(folder) / name
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue  # renamed into place or deleted meanwhile
            yield StoredBlob(key=path.relative_to(root).as_posix(), size=stat.st_size, modified=stat.st_mtime)


def _s3() -> tuple[Any, str]:
    """The S3 client and bucket of the store (django-storages' S3Storage, untyped)."""
    storage: Any = default_storage
    return storage.connection.meta.client, storage.bucket_name


def _s3_prefix() -> str:
    location = str(getattr(default_storage, "location", "")).strip("/")
    return f"{location}/" if location else ""


def _listed_s3() -> Iterator[StoredBlob]:
    prefix = _s3_prefix()
    client, bucket = _s3()
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    for page in pages:
        for item in page.get("Contents", ()):
            key = item["Key"][len(prefix) :]
            yield StoredBlob(key=key, size=int(item["Size"]), modified=item["LastModified"].timestamp())


def blobs_listed() -> Iterator[StoredBlob]:
    """Every blob in the store (but scratch files), lazily."""
    root = _filesystem_root()
    return _listed_filesystem(root) if root is not None else _listed_s3()


def _deleted(keys: list[str]) -> None:
    root = _filesystem_root()
    if root is not None:
        for key in keys:
            (root / key).unlink(missing_ok=True)
        return
    prefix = _s3_prefix()
    client, bucket = _s3()
    for start in range(0, len(keys), S3_DELETE_LIMIT):
        objects = [{"Key": f"{prefix}{key}"} for key in keys[start : start + S3_DELETE_LIMIT]]
        answer = client.delete_objects(Bucket=bucket, Delete={"Objects": objects, "Quiet": True})
        for error in answer.get("Errors", ()):
            logger.warning("blob gc could not delete %s: %s", error.get("Key"), error.get("Message"))


# --- References ---------------------------------------------------------------------------------------------


def _digest_of(key: str) -> str | None:
    match = BLOB_KEY.fullmatch(key)
    return f"{match['algorithm']}:{match['hex']}" if match else None


def _owned_documents(digests: list[str]) -> set[str]:
    """Those of `digests` a stored request lists among its generated documents."""
    if connection.vendor == "postgresql":
        table = connection.ops.quote_name(ContainerRequest._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT DISTINCT owned FROM {table}, jsonb_array_elements_text(generated_digests) owned"  # noqa: S608
                " WHERE generated_digests ?| %s AND owned = ANY(%s)",
                [digests, digests],
            )
            return {row[0] for row in cursor.fetchall()}
    owned = ContainerRequest.objects.filter
    return {digest for digest in digests if owned(generated_digests__icontains=f'"{digest}"').exists()}


def _freeze_layers_awaited(digests: list[str]) -> set[str]:
    """Those of `digests` a pending or running freeze build adds (named by its Containerfile only: no row)."""
    if not digests:
        return set()
    awaited = Q()
    for digest in digests:
        awaited |= freeze_waiting(digest)
    builds = Build.objects.filter(awaited, state__in=Build.ACTIVE).values_list("container_file", flat=True)
    named = {f"sha256:{match['hex']}" for text in builds.iterator() for match in LAYER_LINE.finditer(text)}
    return named.intersection(digests)


def _referenced(keys: Iterable[str]) -> set[str]:
    """Those of `keys` something stored references (keys of no known kind count as referenced)."""
    by_digest: dict[str, str] = {}
    by_build: dict[str, list[str]] = {}
    referenced = set()
    for key in keys:
        digest = _digest_of(key)
        log = LOG_KEY.fullmatch(key)
        if digest is not None:
            by_digest[digest] = key
        elif log is not None:
            by_build.setdefault(log["build_id"], []).append(key)
        elif not PARTIAL_KEY.fullmatch(key):
            referenced.add(key)
    if by_digest:
        digests = list(by_digest)
        used = set(InjectedLayer.objects.filter(gzip_digest__in=digests).values_list("gzip_digest", flat=True))
        used |= set(
            LayerDownload.objects.filter(gzip_digest__in=digests)
            .exclude(state=LayerDownload.State.FAILED)
            .values_list("gzip_digest", flat=True)
        )
        used |= set(Build.objects.filter(context_digest__in=digests).values_list("context_digest", flat=True))
        used |= _owned_documents([digest for digest in digests if digest not in used])
        used |= _freeze_layers_awaited([digest for digest in digests if digest not in used])
        referenced |= {by_digest[digest] for digest in used if digest in by_digest}
    if by_build:
        for build_id in Build.objects.filter(build_id__in=list(by_build)).values_list("build_id", flat=True):
            referenced.update(by_build[build_id])
    return referenced


# --- Collection ---------------------------------------------------------------------------------------------


def _delete_unless_reused(blobs: list[StoredBlob]) -> list[StoredBlob]:
    """Delete `blobs` (judged unreferenced) but those a writer announced or referenced meanwhile; the deleted."""
    cache = shared_cache()
    owner = secrets.token_hex(8)
    locked = [blob for blob in blobs if cache.add(GC_LOCK.format(key=blob.key), owner, GC_LOCK_TTL)]
    try:
        marks = cache.get_many([REUSE_MARK.format(key=blob.key) for blob in locked])
        unmarked = [blob for blob in locked if REUSE_MARK.format(key=blob.key) not in marks]
        still_referenced = _referenced(blob.key for blob in unmarked)
        doomed = [blob for blob in unmarked if blob.key not in still_referenced]
        with store_errors():
            _deleted([blob.key for blob in doomed])
        # Still under the locks: a writer storing the document again re-creates its row after this.
        digests = [digest for blob in doomed if (digest := _digest_of(blob.key)) is not None]
        GeneratedDocument.objects.filter(digest__in=digests).delete()
    finally:
        cache.delete_many([GC_LOCK.format(key=blob.key) for blob in locked])
    return doomed


def _batches(blobs: Iterator[StoredBlob], size: int) -> Iterator[list[StoredBlob]]:
    while batch := list(islice(blobs, size)):
        yield batch


def blob_gc(
    *,
    grace: float | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    dry_run: bool = False,
    on_blob: Callable[[StoredBlob], None] | None = None,
) -> GcCounts:
    """Delete unreferenced blobs older than `grace` s (WAVE_BLOB_GC_GRACE), and scratch files of dead downloads;
    `on_blob` is called with each blob deleted (`dry_run`: each that would be, and nothing is deleted)."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    grace = settings.WAVE_BLOB_GC_GRACE if grace is None else grace
    cutoff = time.time() - grace
    tally = _Tally()
    old = (blob for blob in tally.counted(blobs_listed()) if blob.modified < cutoff)
    count, size = 0, 0
    for batch in _batches(old, batch_size):
        referenced = _referenced(blob.key for blob in batch)
        unreferenced = [blob for blob in batch if blob.key not in referenced]
        if not unreferenced:
            continue
        if not dry_run:
            _before_delete([blob.key for blob in unreferenced])
            unreferenced = _delete_unless_reused(unreferenced)
        for blob in unreferenced:
            if on_blob is not None:
                on_blob(blob)
            count, size = count + 1, size + blob.size
    # The listing is exhausted here; what a dry run lists stays.
    left = (tally.blobs, tally.bytes) if dry_run else (tally.blobs - count, tally.bytes - size)
    _store_size_record(blobs=left[0], size=left[1])
    # A live download never outlives the download timeout (blob_scratch_sweep): never sweep younger files.
    scratch_age = max(grace, settings.WAVE_LAYER_DOWNLOAD_TIMEOUT)
    scratch = blob_scratch_sweep(older_than=scratch_age, dry_run=dry_run)
    counts = GcCounts(blobs=count, bytes=size, scratch_files=scratch)
    if count or scratch:
        logger.info("blob gc%s: %s", " (dry run)" if dry_run else "", counts)
    return counts
