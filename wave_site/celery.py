"""The Celery app: JSON only, one task prefetched at a time, three queues, no result backend."""

from __future__ import annotations

import os

from celery import Celery
from kombu import Exchange, Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "wave_site.settings")

QUEUES = ("builds", "layers", "default")

app = Celery("wave")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Each queue has its own exchange and routing key: a task routed to one queue lands in that queue only.
app.conf.task_queues = tuple(Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES)
app.autodiscover_tasks()
