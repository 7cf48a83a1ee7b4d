"""What a request's status reports: PENDING while its layers download, DONE once they settled."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.utils import timezone

from builds.models import Build
from builds.selectors import build_page_url
from requests_app.models import ContainerRequest, InjectedLayer
from wave_site.redact import redact_text
from wave_site.serializers import duration_text

PENDING = "PENDING"
BUILDING = "BUILDING"
DONE = "DONE"


@dataclass(frozen=True)
class ContainerStatus:
    token: str
    status: str  # PENDING, BUILDING or DONE
    created_at: dt.datetime
    duration: str | None = None
    succeeded: bool | None = None  # known once DONE
    reason: str | None = None
    build_id: str | None = None
    details_uri: str | None = None


def _duration(request: ContainerRequest, layers: list[InjectedLayer], *, is_pending: bool) -> str | None:
    """Seconds from creation until the last layer settled (until now while pending), as the reference
    writes them: a decimal string with nanoseconds, `"12.500000000"`. None when a settle time is unknown."""
    finished = [layer.finished_at for layer in layers]
    if is_pending:
        end = timezone.now()
    elif any(moment is None for moment in finished):
        return None
    else:
        end = max([request.created_at, *(moment for moment in finished if moment is not None)])
    return duration_text(max((end - request.created_at).total_seconds(), 0.0))


def _build_status(request: ContainerRequest, build: Build) -> ContainerStatus:
    """BUILDING while the build runs; DONE once it finished, failed with its reason and page."""
    if build.is_active:
        status, succeeded, reason = BUILDING, None, None
    else:
        status, succeeded = DONE, build.state == Build.State.SUCCEEDED
        reason = None if succeeded else (build.failure_reason or build.state)
    end = build.finished_at or timezone.now()
    return ContainerStatus(
        token=request.token,
        status=status,
        created_at=request.created_at,
        duration=duration_text(max((end - request.created_at).total_seconds(), 0.0)),
        succeeded=succeeded,
        reason=reason,
        build_id=build.build_id,
        details_uri=build_page_url(build.build_id),
    )


def container_request_status(request: ContainerRequest) -> ContainerStatus:
    """For a build: BUILDING, then DONE (see `_build_status`). Otherwise DONE and succeeded once every layer
    is ready; DONE and failed, with the first failure's reason (its location redacted), as soon as one
    failed; PENDING otherwise."""
    if request.build_id:
        build = Build.objects.filter(build_id=request.build_id).first()
        was_over = build is not None and build.finished_at is not None and build.finished_at <= request.created_at
        if build is not None and not was_over:  # over before the request came: its image existed (`cached`)
            return _build_status(request, build)
    layers = list(request.layers.all())
    failed = [layer for layer in layers if layer.state == InjectedLayer.State.FAILED]
    pending = [layer for layer in layers if layer.state == InjectedLayer.State.PENDING]
    status, reason = DONE, None
    succeeded: bool | None = True
    if failed:
        first = failed[0]
        succeeded = False
        reason = redact_text(f"Layer {first.position} ({first.gzip_digest}) failed: {first.failure_reason}", first.url)
    elif pending:
        status, succeeded = PENDING, None
    return ContainerStatus(
        token=request.token,
        status=status,
        created_at=request.created_at,
        duration=_duration(request, layers, is_pending=bool(pending)),
        succeeded=succeeded,
        reason=reason,
        build_id=request.build_id or None,
    )
