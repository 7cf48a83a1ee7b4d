"""Reads of mirrors: a mirror by id (its shape checked before any query) and its page's URL."""

from __future__ import annotations

import re

from django.conf import settings

from builds.models import Build

MIRROR_ID = re.compile(r"mr-[0-9a-f]{16}_[0-9]+")


def mirror_get(*, mirror_id: str) -> Build | None:
    if MIRROR_ID.fullmatch(mirror_id) is None:
        return None
    return Build.objects.filter(build_id=mirror_id, kind=Build.Kind.MIRROR).first()


def mirror_page_url(mirror_id: str) -> str:
    return f"{settings.WAVE_SERVER_URL}/view/mirrors/{mirror_id}"
