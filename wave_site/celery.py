"""The Celery app: JSON only, one task prefetched at a time, three queues, no result backend.

Delivery guarantees (settings: acks late, rejected when the worker is lost, Redis visibility timeout):
a task is acknowledged only once it ran, a message held by a killed pool child goes back to the queue
at once, and one held by a killed worker comes back after the visibility timeout (Redis) or is lost
(embedded filesystem broker). Durable jobs do not depend on any of this: their rows are re-queued by
their reaper (requests_app.downloads), and a second delivery finds the row claimed and does nothing.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Celery
from celery.signals import worker_ready
from kombu import Exchange, Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "wave_site.settings")

QUEUES = ("builds", "layers", "default")
logger = logging.getLogger(__name__)

app = Celery("wave")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Each queue has its own exchange and routing key: a task routed to one queue lands in that queue only.
app.conf.task_queues = tuple(Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES)
app.autodiscover_tasks()


@worker_ready.connect
def sweep_scratch_files(**_: Any) -> None:
    """A worker starting removes scratch files of jobs whose worker died (process start-up, not domain flow)."""
    from django.conf import settings

    from wave_site.blobstore import blob_scratch_sweep

    removed = blob_scratch_sweep(older_than=settings.WAVE_LAYER_DOWNLOAD_TIMEOUT)
    if removed:
        logger.info("removed %d scratch files of dead downloads", removed)
