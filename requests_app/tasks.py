"""Periodic work on container requests."""

from __future__ import annotations

import logging

from celery import shared_task

from requests_app.services import container_request_purge

logger = logging.getLogger(__name__)


@shared_task(name="requests_app.container_request_purge", ignore_result=True)
def container_request_purge_task() -> int:
    deleted = container_request_purge()
    if deleted:
        logger.info("purged %d expired container requests", deleted)
    return deleted
