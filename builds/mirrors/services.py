"""Writes of mirrors: create or join (the durable-job pattern of builds.services, for copies of an image).

The same inputs (source, its digest, target, platform) make the same containerId; an active mirror of the same
target is joined (the partial unique constraint of builds keeps one), a target that already holds the source's
digest needs no copy (`cached`). The task is sent once the transaction commits; it runs builds.mirrors.runs.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from builds.access import same_scope
from builds.models import Build
from builds.services import BuildAnswer, build_enqueue, caller_fields
from credentials.callers import Caller
from credentials.sessions import TowerContext
from registry.reference import ImageReference
from wave_site.errors import InvalidRequest
from wave_site.metrics.usage import UsageKind, usage_count_quietly

logger = logging.getLogger(__name__)
PREFIX = "mr-"


@dataclass(frozen=True)
class MirrorRequest:
    """A copy of `source_image` (at `source_digest`) to `target_image`; `platform` "" for every platform."""

    source_image: str
    source_digest: str
    target_image: str
    repository: str
    platform: str = ""

    @property
    def container_id(self) -> str:
        inputs = "\0".join((self.source_image, self.source_digest, self.target_image, self.platform))
        return hashlib.sha256(inputs.encode()).hexdigest()[:16]


def mirror_target(*, source: ImageReference, repository: str) -> str:
    """`<repository>/<source path>:<tag>` (or `@<digest>` for a source named by digest)."""
    return f"{repository.rstrip('/')}/{source.path_and_version}"


def mirror_create_or_join(
    *, request: MirrorRequest, caller: Caller, tower: TowerContext | None, target_digest: str | None,
    before_start: Callable[[], None],
) -> BuildAnswer:  # fmt: skip
    """The mirror of `request`: none needed when the target already holds the source's digest (`target_digest`,
    read by the caller before any transaction), the active one of that target, or a new one (`before_start` first:
    it may refuse it)."""
    target = request.target_image
    mirrors = Build.objects.filter(kind=Build.Kind.MIRROR, target_image=target)
    if target_digest is not None and target_digest == request.source_digest:
        last = mirrors.filter(digest=target_digest).order_by("-created_at").first()
        return BuildAnswer(target=target, build_id=last.build_id if last else "", build=last, cached=True,
                           started=False)  # fmt: skip
    for _attempt in range(5):
        active = Build.objects.filter(target_image=target, state__in=Build.ACTIVE).first()
        if active is not None:
            if active.kind != Build.Kind.MIRROR or not same_scope(active, tower):
                raise InvalidRequest(f"Another copy to '{target}' is in progress - retry once it ended")
            return BuildAnswer(target=target, build_id=active.build_id, build=active, cached=False, started=False)
        before_start()
        try:
            with transaction.atomic():
                mirror = _create(request, caller=caller, tower=tower)
        except IntegrityError:
            continue  # a concurrent identical request created it: join it
        transaction.on_commit(functools.partial(build_enqueue, build_pk=mirror.pk))
        usage_count_quietly(kind=UsageKind.MIRRORS, email=mirror.user_email, platform=mirror.platform)
        logger.info("mirror %s of %s to %s created", mirror.build_id, request.source_image, target)
        return BuildAnswer(target=target, build_id=mirror.build_id, build=mirror, cached=False, started=True)
    raise RuntimeError(f"could not create or join a mirror to {target}")


def _create(request: MirrorRequest, *, caller: Caller, tower: TowerContext | None) -> Build:
    cid = request.container_id
    last = Build.objects.filter(container_id=cid).aggregate(last=Max("number"))["last"] or 0
    now = timezone.now()
    return Build.objects.create(
        kind=Build.Kind.MIRROR,
        build_id=f"{PREFIX}{cid}_{last + 1}",
        container_id=cid,
        number=last + 1,
        source_image=request.source_image,
        target_image=request.target_image,
        repository=request.repository,
        platform=request.platform,
        container_file="",
        created_at=now,
        queued_at=now,
        **caller_fields(caller, tower),
    )
