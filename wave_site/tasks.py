"""Celery tasks of the site as a whole: blob garbage collection (wave_site.blob_gc), daily by default."""

from __future__ import annotations

from celery import shared_task

from wave_site.blob_gc import blob_gc
from wave_site.jobs import outage_logged


@shared_task(name="wave_site.blob_gc", ignore_result=True)
def blob_gc_task() -> dict[str, int]:
    """Delete blobs nothing references any more, past the grace period; the counts."""
    counts: dict[str, int] = {}
    with outage_logged("blob garbage collection skipped", then="the next one collects them"):
        collected = blob_gc()
        counts = {"blobs": collected.blobs, "bytes": collected.bytes, "scratch_files": collected.scratch_files}
    return counts
