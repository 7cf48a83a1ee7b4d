"""The Celery app: JSON only, one task prefetched at a time, three queues, no result backend.

Two workers consume them (`manage.py run`, docker-compose.yml): builds and the periodic tasks (the
reaper, the purge) in a pool of processes; layer downloads, which mostly wait on the network, in a pool
of threads of their own (WAVE_DOWNLOAD_CONCURRENCY), so that slow layer servers hold back neither builds,
nor the reaper, nor many other downloads.

Delivery guarantees (settings: acks late, rejected when the worker is lost, Redis visibility timeout):
a task is acknowledged only once it ran, a message held by a killed pool child goes back to the queue
at once, and one held by a killed worker comes back after the visibility timeout (Redis) or is lost
(embedded filesystem broker). Durable jobs do not depend on any of this: their rows are re-queued by
their reaper (requests_app.downloads), and a second delivery finds the row claimed and does nothing.

A worker outlives a broker outage however long (settings: no retry limit), in one WARNING line per
reconnection attempt (wave_site.log_filters). kombu's Redis channel is amended for that: see
`RedisTransport`.
"""

from __future__ import annotations

import logging
import os
from queue import Empty
from typing import Any

from celery import Celery
from celery.signals import worker_ready, worker_shutdown, worker_shutting_down
from kombu import Exchange, Queue
from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "wave_site.settings")

QUEUES = ("builds", "layers", "default")
# Builds in processes (one each); layer downloads in threads; the periodic tasks (reapers, purges) in a worker
# of their own, so that they never wait behind the builds and downloads they watch.
PROCESS_POOL_QUEUES = ("builds",)
THREAD_POOL_QUEUES = ("layers",)
MAINTENANCE_QUEUES = ("default",)
logger = logging.getLogger(__name__)


class _RedisChannel(kombu_redis.Channel):
    """kombu's Redis channel, which closes even when the broker died while it waited for a message.

    kombu 5.7 reads the pending BRPOP answer first when it closes a channel; with Redis gone that read
    raises, the channel is left open, and the retry (once the connection was detached) fails with
    AttributeError, which Celery reports as "Unrecoverable error": the worker shuts down instead of
    reconnecting. It happens whenever Redis goes away while a worker has a free slot and a task still
    unacknowledged, the usual state of the downloads worker. Here that read gives up, and closing goes on.
    """

    def _brpop_read(self, **options: Any) -> bool:
        channel: Any = self  # kombu's stubs leave out the channel's private parts
        try:
            return bool(super()._brpop_read(**options))  # type: ignore[misc]
        except channel.connection_errors:
            if channel._closing:
                raise Empty() from None
            raise


class RedisTransport(kombu_redis.Transport):
    Channel = _RedisChannel


# Registered under kombu's own names, so that `redis://` and `rediss://` URLs keep every other behaviour.
TRANSPORT_ALIASES.update({"redis": f"{__name__}:RedisTransport", "rediss": f"{__name__}:RedisTransport"})

app = Celery("wave")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Each queue has its own exchange and routing key: a task routed to one queue lands in that queue only.
app.conf.task_queues = tuple(Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES)
app.autodiscover_tasks()

from wave_site import request_id  # noqa: E402, F401  # connects the hooks that carry request ids into tasks


@worker_ready.connect
def sweep_scratch_files(**_: Any) -> None:
    """A worker starting removes scratch files of jobs whose worker died (process start-up, not domain flow)."""
    from django.conf import settings

    from wave_site.blobstore import blob_scratch_sweep
    from wave_site.jobs import jobs_stop_forget

    jobs_stop_forget()
    removed = blob_scratch_sweep(older_than=settings.WAVE_LAYER_DOWNLOAD_TIMEOUT)
    if removed:
        logger.info("removed %d scratch files of dead downloads", removed)


@worker_shutting_down.connect
def give_back_jobs(**_: Any) -> None:
    """A warm shutdown: the jobs this process runs in threads (downloads) go back to the queue at once, and
    stop at their next read, instead of holding the shutdown until they end (a thread cannot be killed); the
    jobs of its pool processes (builds) at their next heartbeat, their processes killed by the builder."""
    from wave_site.jobs import jobs_stop

    jobs_stop(mark_for_children=True)


@worker_shutdown.connect
def send_given_back_jobs(**_: Any) -> None:
    """The worker no longer takes tasks: send the jobs it gave back, for the next worker to take up."""
    from wave_site.jobs import jobs_stop_forget, jobs_stopped

    jobs_stopped()
    jobs_stop_forget()
