"""Celery tasks of credentials: the purge of retired pairing keys (a thin shell over credentials.pairing).

Safe to deliver twice or run concurrently: a second run finds nothing left to delete. With the database
down it logs one WARNING line and ends (wave_site.jobs.outage_logged); the next run purges in its place.
"""

from __future__ import annotations

import logging

from celery import shared_task

from credentials.pairing import pairing_key_purge
from wave_site.jobs import outage_logged

logger = logging.getLogger(__name__)


@shared_task(name="credentials.pairing_key_purge", ignore_result=True)
def pairing_key_purge_task() -> int:
    deleted = 0
    with outage_logged("purge of retired pairing keys skipped", then="the next one purges them"):
        deleted = pairing_key_purge()
        if deleted:
            logger.info("purged %d retired pairing keys", deleted)
    return deleted
