"""Build logs in the blob store: appended in chunks while the build runs, read by any web process.

Chunk `n` of a build lives at `builds/<buildId>/log/<n>`; the row's `log_chunks` says how many are complete,
so a reader never lists the store (S3 listings are slow and eventually consistent) and never sees a chunk
that is still being written. A log is capped at WAVE_BUILD_LOG_MAX_BYTES; past it, one line says so.
"""

from __future__ import annotations

from django.conf import settings
from django.db.models import F

from builds.models import Build
from wave_site.blobstore import blob_delete, blob_read, blob_store_write

CHUNK_BYTES = 256 * 1024
# The last chunk this process wrote, per build: appended to without reading it back from the store.
_last_chunk: dict[str, tuple[int, bytes]] = {}
TRUNCATED = "\n[log truncated: it passed the {limit} bytes this service keeps]\n"


def log_chunk_key(build_id: str, number: int) -> str:
    return f"builds/{build_id}/log/{number:06d}"


def build_log_append(*, build: Build, text: str) -> None:
    """Append `text` to the build's log; past the cap, a last line saying it was truncated.

    Small appends grow the last chunk (rewritten whole, replaced at once) until it holds CHUNK_BYTES; only
    then a new chunk starts: a build printing a line a second leaves a few chunks, not one per flush, so
    that a reader of its log fetches a few blobs. Only the build's one writer appends (its run).
    """
    data = text.encode("utf-8", "replace")
    limit = settings.WAVE_BUILD_LOG_MAX_BYTES
    if build.log_size >= limit:
        return
    if build.log_size + len(data) > limit:
        data = data[: limit - build.log_size] + TRUNCATED.format(limit=limit).encode()
    if not data:
        return
    last = build.log_chunks - 1
    tail = _last_chunk.get(build.build_id) if last >= 0 else None
    if tail is not None and tail[0] == last and len(tail[1]) + len(data) <= CHUNK_BYTES:
        grown = tail[1] + data
        blob_store_write(log_chunk_key(build.build_id, last), grown)
        _last_chunk[build.build_id] = (last, grown)
        Build.objects.filter(pk=build.pk).update(log_size=F("log_size") + len(data))
        build.log_size += len(data)
        return
    number = build.log_chunks
    blob_store_write(log_chunk_key(build.build_id, number), data)
    _last_chunk.clear()  # one build at a time per writer: keep one tail
    _last_chunk[build.build_id] = (number, data)
    Build.objects.filter(pk=build.pk).update(log_chunks=F("log_chunks") + 1, log_size=F("log_size") + len(data))
    build.log_chunks, build.log_size = number + 1, build.log_size + len(data)


def build_log_text(*, build: Build, first_chunk: int = 0) -> str:
    """The log written so far (from `first_chunk`), as text."""
    parts = []
    for number in range(first_chunk, build.log_chunks):
        try:
            parts.append(blob_read(log_chunk_key(build.build_id, number)))
        except FileNotFoundError:
            parts.append(b"[a part of this log is missing from the blob store]\n")
    return b"".join(parts).decode("utf-8", "replace")


def build_log_delete(*, build: Build) -> None:
    for number in range(build.log_chunks):
        blob_delete(log_chunk_key(build.build_id, number))
