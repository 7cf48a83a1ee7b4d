from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest

from wave_site.config import commit_id


def service(request: HttpRequest) -> dict[str, str]:
    """Version and commit for templates (the admin footer shows which build an operator is on)."""
    return {"wave_version": settings.WAVE_VERSION, "wave_commit_id": commit_id()}
