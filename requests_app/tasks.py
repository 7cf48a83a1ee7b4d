"""Celery tasks of container requests: layer downloads (a primary key each), their reaper, the purge.

Each task is a thin shell over a service (requests_app.downloads, requests_app.services) and is safe
to deliver twice: a download's claim is a compare-and-set on its row. With the database or Redis down a
task logs one WARNING line and ends (wave_site.jobs.outage_logged): its row stays as it was, and the
reaper takes it up again once the store is back. Downloads run in a thread pool: nothing here is shared
between threads.
"""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings

from requests_app.downloads import layer_download_reap, layer_download_run
from requests_app.purge import expired_purge
from wave_site.blobstore import blob_scratch_sweep
from wave_site.jobs import outage_logged

logger = logging.getLogger(__name__)


@shared_task(name="requests_app.container_request_purge", ignore_result=True)
def container_request_purge_task() -> int:
    """Purge requests, layers, downloads and builds past retention (requests_app.purge); requests deleted."""
    deleted = 0
    with outage_logged("purge of expired container requests skipped", then="the next one purges them"):
        deleted = expired_purge().requests
    return deleted


@shared_task(
    name="requests_app.layer_download",
    ignore_result=True,
    # The fetch has its own absolute deadline; these only bound a store upload that hangs (in a process pool:
    # a thread pool enforces no time limit).
    soft_time_limit=settings.WAVE_LAYER_DOWNLOAD_TIMEOUT + 300,
    time_limit=settings.WAVE_LAYER_DOWNLOAD_TIMEOUT + 360,
)
def layer_download_task(download_pk: int) -> str:
    """Run one queued LayerDownload; a duplicate or redelivered message finds it claimed and does nothing."""
    state = "interrupted"
    with outage_logged(f"layer download {download_pk} interrupted", then="the reaper takes it up again"):
        state = layer_download_run(download_pk=download_pk)
    return state


@shared_task(name="requests_app.layer_download_reap", ignore_result=True)
def layer_download_reap_task() -> dict[str, int]:
    """Re-queue or fail downloads whose worker died, send again those the broker lost, sweep dead scratch files."""
    counts: dict[str, int] = {}
    with outage_logged("layer download reaper skipped", then="the next one runs in its place"):
        reaped = layer_download_reap()
        swept = blob_scratch_sweep(older_than=settings.WAVE_LAYER_DOWNLOAD_TIMEOUT)
        if swept:
            logger.info("removed %d scratch files of dead downloads", swept)
        counts = {"requeued": reaped.requeued, "failed": reaped.failed, "resent": reaped.resent, "swept": swept}
    return counts
