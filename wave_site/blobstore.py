"""The blob store: injected layers, generated documents and downloads on their way in, by digest.

A folder of the data dir (Django's filesystem storage) or an S3-compatible store (django-storages).
Blobs are written whole or not at all: on the filesystem under a temporary name renamed into place,
on S3 by a single upload. Keys are content digests, so concurrent writers of one key write the same bytes.
Whoever asks whether a blob exists (to reference it rather than store it again) announces it first, so that
the blob collector leaves it alone (`blob_reuse_announce`, wave_site.blob_gc).
"""

from __future__ import annotations

import os
import secrets
import tempfile
import time
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from wave_site.cache import shared_cache
from wave_site.errors import TemporarilyUnavailable, outage_of

# The blob collector and the writers that reuse a stored blob agree through the cache (wave_site.blob_gc).
REUSE_MARK = "wave:blob-reuse:{key}"
GC_LOCK = "wave:blob-gc:{key}"
REUSE_LEASE = 3600  # s: longer than any check-then-reference (a request's creation, a download's end)
GC_LOCK_TTL = 60  # s: the collector deletes one batch under its locks, well within this
REUSE_PATIENCE = 30  # s: how long a writer waits for Redis to set its mark


class BlobStoreUnavailable(TemporarilyUnavailable):
    """The store did not answer or refused us (not: the blob is missing, which is FileNotFoundError)."""


@contextmanager
def store_errors() -> Iterator[None]:
    """Failures of the store itself as BlobStoreUnavailable; a missing blob stays FileNotFoundError."""
    try:
        yield
    except FileNotFoundError:
        raise
    except (OSError, BotoCoreError, ClientError) as exc:
        raise BlobStoreUnavailable(f"The blob store is unavailable: {type(exc).__name__}") from None


def blob_key(digest: str) -> str:
    algorithm, _, hex_digest = digest.partition(":")
    return f"blobs/{algorithm}/{hex_digest[:2]}/{hex_digest}"


def blob_reuse_announce(key: str) -> None:
    """Say that `key` may be referenced from now on (for REUSE_LEASE s) if it exists: the collector leaves it
    alone. When the collector is deleting it at this moment, wait until it is done: it is then gone.

    Without Redis the mark cannot be set: retried for up to REUSE_PATIENCE s (a download ending during a
    short outage still ends well; the web has answered 503 long before, on its own reads of Redis), then the
    outage is raised.
    """
    deadline = time.monotonic() + REUSE_PATIENCE
    while True:
        try:
            _reuse_announced(key)
            return
        except Exception as exc:
            if outage_of(exc) != "redis" or time.monotonic() > deadline:
                raise
            time.sleep(1)


def _reuse_announced(key: str) -> None:
    cache = shared_cache()
    cache.set(REUSE_MARK.format(key=key), 1, REUSE_LEASE)
    deadline = time.monotonic() + GC_LOCK_TTL
    while cache.get(GC_LOCK.format(key=key)) is not None and time.monotonic() < deadline:
        time.sleep(0.05)


def _local_path(key: str) -> str | None:
    """Where the blob lives on this machine's disk; None for a remote store."""
    try:
        return default_storage.path(key)
    except NotImplementedError:
        return None


def _store(key: str, content: File) -> None:
    stored = default_storage.save(key, content)
    if stored != key:  # the store renamed it: it must overwrite instead (file_overwrite)
        raise RuntimeError(f"blob store saved {key} as {stored}")


def blob_store_put(digest: str, content: bytes) -> str:
    """Store content under its digest once; the key."""
    key = blob_key(digest)
    blob_reuse_announce(key)
    with store_errors():
        if default_storage.exists(key):
            return key
        final = _local_path(key)
        if final is None:
            _store(key, ContentFile(content))
            return key
        partial = default_storage.save(f"{key}.partial-{secrets.token_hex(4)}", ContentFile(content))
        os.replace(default_storage.path(partial), final)
    return key


def blob_store_write(key: str, content: bytes) -> None:
    """Store `content` under `key` (not a digest: build log chunks, say), replacing what was there at once:
    a reader sees the old bytes or the new, never nothing (a rename on the filesystem; S3 overwrites)."""
    with store_errors():
        final = _local_path(key)
        if final is None:
            _store(key, ContentFile(content))
            return
        partial = default_storage.save(f"{key}.partial-{secrets.token_hex(4)}", ContentFile(content))
        os.replace(default_storage.path(partial), final)


def blob_delete(key: str) -> None:
    with store_errors():
        default_storage.delete(key)


@contextmanager
def blob_open(key: str) -> Iterator[IO[bytes]]:
    """A stored blob opened for reading (streamed, whatever its size); FileNotFoundError when it is missing."""
    with store_errors(), default_storage.open(key, "rb") as handle:
        yield handle


def blob_exists(key: str) -> bool:
    """Whether `key` is stored; announced first (`blob_reuse_announce`): a caller may reference what it found."""
    blob_reuse_announce(key)
    with store_errors():
        return bool(default_storage.exists(key))


def blob_size(key: str) -> int:
    """The blob's size; FileNotFoundError when it is missing."""
    with store_errors():
        return int(default_storage.size(key))


def blob_read(key: str) -> bytes:
    """A small blob's bytes (generated documents); FileNotFoundError when it is missing."""
    with store_errors(), default_storage.open(key) as handle:
        return bytes(handle.read())


SCRATCH_PREFIX = ".download-"


def _scratch_folder() -> Path:
    """One folder for blobs on their way in: inside the store's root on the filesystem (on the same disk, so
    that moving one into place is a rename), in the data dir for a remote store."""
    local = _local_path("scratch")
    return Path(local) if local is not None else settings.DATA_DIR / "tmp"


@contextmanager
def blob_scratch_file() -> Iterator[str]:
    """A temporary file for a blob on its way in (a download being verified); removed afterwards.

    A worker killed meanwhile leaves it behind: `blob_scratch_sweep` removes it later.
    """
    folder = _scratch_folder()
    folder.mkdir(parents=True, exist_ok=True)
    fd, scratch = tempfile.mkstemp(dir=folder, prefix=SCRATCH_PREFIX)
    os.close(fd)
    try:
        yield scratch
    finally:
        if os.path.exists(scratch):
            os.unlink(scratch)


def blob_scratch_sweep(*, older_than: float, dry_run: bool = False) -> int:
    """Remove scratch files nobody wrote to for `older_than` seconds (their worker died); how many were removed
    (`dry_run`: would be).

    A live download writes its file at least once per rate window, and cannot outlive the download
    timeout: callers pass that timeout, so no live download loses its file.
    """
    cutoff = time.time() - older_than
    removed = 0
    for folder in {_scratch_folder(), settings.DATA_DIR / "tmp"}:
        for path in folder.glob(f"{SCRATCH_PREFIX}*") if folder.is_dir() else ():
            try:
                if path.stat().st_mtime < cutoff:
                    if not dry_run:
                        path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue  # finished (moved into place) meanwhile
    return removed


def blob_store_put_file(key: str, scratch: str) -> None:
    """Move a verified scratch file (from `blob_scratch_file`) into the store under `key`."""
    final = _local_path(key)
    if final is not None:
        Path(final).parent.mkdir(parents=True, exist_ok=True)
        os.replace(scratch, final)
        return
    with store_errors(), open(scratch, "rb") as handle:
        _store(key, File(handle))


def blob_redirect_url(key: str) -> str | None:
    """A short-lived URL clients fetch a remote blob from directly; None when we serve it ourselves."""
    if _local_path(key) is not None:
        return None
    with store_errors():
        return str(default_storage.url(key))


def blob_read_range(key: str, *, start: int, length: int, chunk_size: int = 64 * 1024) -> Generator[bytes, None, None]:
    """The bytes `start .. start + length - 1` of a stored blob, in chunks (streamed: memory stays flat).

    FileNotFoundError (when opened) for a missing blob; BlobStoreUnavailable when the store fails.
    """
    with store_errors():
        handle = default_storage.open(key, "rb")
    try:
        with store_errors():
            handle.seek(start)
        remaining = length
        while remaining > 0:
            with store_errors():
                chunk = handle.read(min(chunk_size, remaining))
            if not chunk:
                return
            remaining -= len(chunk)
            yield bytes(chunk)
    finally:
        handle.close()
