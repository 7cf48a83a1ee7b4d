"""Periodic work on container requests."""

from __future__ import annotations

import logging

from celery import Task, shared_task

from requests_app.downloads import LayerDownloadBusy, injected_layer_download, injected_layer_fail
from requests_app.models import InjectedLayer
from requests_app.services import container_request_purge
from wave_site.errors import unexpected_error_message

logger = logging.getLogger(__name__)


@shared_task(name="requests_app.container_request_purge", ignore_result=True)
def container_request_purge_task() -> int:
    deleted = container_request_purge()
    if deleted:
        logger.info("purged %d expired container requests", deleted)
    return deleted


# 150 retries x 5 s outlasts the longest download another worker may hold the digest's lock for.
LAYER_DOWNLOAD_MAX_RETRIES = 150


@shared_task(name="requests_app.layer_download", bind=True, ignore_result=True, max_retries=LAYER_DOWNLOAD_MAX_RETRIES)
def layer_download_task(self: Task, layer_pk: int) -> str:
    """Download a layer; when another worker holds the same digest, look again shortly."""
    try:
        return injected_layer_download(layer_pk=layer_pk)
    except LayerDownloadBusy as exc:
        if self.request.retries >= LAYER_DOWNLOAD_MAX_RETRIES:
            injected_layer_fail(layer_pk=layer_pk, reason="Layer download did not start: another download held it")
            return InjectedLayer.State.FAILED
        raise self.retry(countdown=5) from exc
    except Exception as exc:  # noqa: BLE001 - any failure must settle the layer
        # Never leave a layer pending forever: the pull must fail with a reason, the traceback goes to the log.
        message = unexpected_error_message(exc)
        injected_layer_fail(layer_pk=layer_pk, reason=f"Layer download failed: {message}")
        return InjectedLayer.State.FAILED
