"""What a request's status reports: PENDING while its layers download, DONE once they settled."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.utils import timezone

from requests_app.models import ContainerRequest, InjectedLayer
from wave_site.redact import redact_text

PENDING = "PENDING"
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
    seconds = max((end - request.created_at).total_seconds(), 0.0)
    return f"{seconds:.9f}"


def container_request_status(request: ContainerRequest) -> ContainerStatus:
    """DONE and succeeded once every layer is ready; DONE and failed, with the first failure's reason
    (its location redacted), as soon as one failed; PENDING otherwise."""
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
