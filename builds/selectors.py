"""Reads of builds: a build by id (its shape checked before any query), its public page's URL, what its status
reports, and the tail of its log (for the admin, without reading a whole long log)."""

from __future__ import annotations

import re

from django.conf import settings

from builds.logs import log_chunk_key
from builds.models import Build
from wave_site.blobstore import blob_read

BUILD_ID = re.compile(r"bd-[0-9a-f]{16}_[0-9]+")
PENDING = "PENDING"
COMPLETED = "COMPLETED"
MISSING_CHUNK = b"[a part of this log is missing from the blob store]\n"


def build_id_is_valid(build_id: str) -> bool:
    """`bd-<16 hex>_<n>`: anything else names no build, so it never reaches the database."""
    return BUILD_ID.fullmatch(build_id) is not None


def build_get(*, build_id: str) -> Build | None:
    if not build_id_is_valid(build_id):
        return None
    return Build.objects.filter(build_id=build_id).first()


def build_page_url(build_id: str) -> str:
    """Where a person reads the build: state, Containerfile and the log, live while it runs."""
    return f"{settings.WAVE_SERVER_URL}/view/builds/{build_id}"


def build_status_name(build: Build) -> str:
    """PENDING while queued or running, COMPLETED once finished (succeeded, failed or cancelled)."""
    return PENDING if build.is_active else COMPLETED


def build_log_tail(*, build: Build, max_bytes: int) -> str:
    """The last `max_bytes` or so of the log, from a line start, read chunk by chunk from the end; a first line
    says how much was left out."""
    parts: list[bytes] = []
    size = 0
    number = build.log_chunks - 1
    while number >= 0 and size < max_bytes:
        try:
            data = blob_read(log_chunk_key(build.build_id, number))
        except FileNotFoundError:
            data = MISSING_CHUNK
        parts.append(data)
        size += len(data)
        number -= 1
    text = b"".join(reversed(parts))
    if number < 0 and size <= max_bytes:
        return text.decode("utf-8", "replace")
    text = text[-max_bytes:]
    newline = text.find(b"\n")
    if 0 <= newline < len(text) - 1:
        text = text[newline + 1 :]
    omitted = max(build.log_size - len(text), 0)
    return f"[{omitted} earlier bytes not shown]\n" + text.decode("utf-8", "replace")
