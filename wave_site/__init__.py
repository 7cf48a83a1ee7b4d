"""Wave: container provisioning service. `__version__` is the one source of the service version."""

from __future__ import annotations

__version__ = "0.1.0"

# The Celery app must be loaded with Django, so that `shared_task`s publish through it.
from wave_site.celery import app as celery_app

__all__ = ["__version__", "celery_app"]
