"""Writes of builds: create or join, claim, heartbeat, finish, cancel, rebuild, reap (the durable-job pattern
of requests_app.downloads, for builds).

A build is created or joined when a request asks for one: a target already in the build repository needs no
build (`cached`); an active build of the same target is joined (the partial unique constraint makes two
concurrent identical requests share one); else the next build of that containerId is created and, once the
transaction commits, its task sent. The task claims it with a compare-and-set on `state` (a redelivered task
does nothing), beats while buildah runs, and finishes it; the reaper fails builds whose worker went silent
("build worker lost") and sends again pending ones that nobody took.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Max, Q
from django.utils import timezone
from kombu.exceptions import OperationalError

from builds.access import build_images_check, same_scope
from builds.freeze import freeze_waiting
from builds.models import Build
from builds.naming import build_id, container_id, target_image
from credentials.callers import Caller
from credentials.clients import registry_client
from credentials.sessions import TowerContext
from registry.client import ManifestUnknownError, RegistryError
from registry.reference import parse_image
from wave_site.blobstore import blob_exists, blob_key
from wave_site.cache import shared_cache
from wave_site.jobs import jobs_after_stop, jobs_due_again, new_claim_id
from wave_site.metrics.usage import UsageKind, usage_count_quietly

logger = logging.getLogger(__name__)

State = Build.State
EXISTS_CACHE_TTL = 60


@dataclass(frozen=True)
class BuildRequest:
    """What a build makes: the same inputs make the same containerId, hence the same target."""

    container_file: str
    platform: str
    repository: str
    conda_file: str = ""
    spack_file: str = ""
    cache_repository: str = ""
    context_digest: str = ""
    target_image: str = ""  # a recipe build's name (builds.naming.recipe_target_image); "" for the plain one

    @property
    def container_id(self) -> str:
        # The recipe copied from the context (conda.yml or spack.yaml) is the containerId's `condaFile` input.
        return container_id(
            container_file=self.container_file, conda_file=self.conda_file or self.spack_file or None,
            platform=self.platform, repository=self.repository, build_context=self.context_digest or None,
        )  # fmt: skip

    @property
    def target(self) -> str:
        return self.target_image or target_image(repository=self.repository, container_id=self.container_id)


@dataclass(frozen=True)
class BuildAnswer:
    """The build a request gets: `build` is None only when the target exists and no build of it is known."""

    target: str
    build_id: str
    build: Build | None
    cached: bool  # the target already existed: nothing was built
    started: bool  # this request started the build (it counts toward the caller's build rate)


def exists_key(target: str) -> str:
    return f"wave:build:exists:{target}"


def target_exists(target: str) -> bool:
    """Whether the build repository already has the target (HEAD with the service's credentials); a yes is
    cached briefly (a pushed tag does not go away by itself), a no never (it is being built)."""
    if shared_cache().get(exists_key(target)):
        return True
    try:
        registry_client().head_manifest(parse_image(target))
    except ManifestUnknownError:
        return False
    except RegistryError as exc:
        logger.warning("build target %s not checked (%s): building it", target, exc.message)
        return False
    shared_cache().set(exists_key(target), True, EXISTS_CACHE_TTL)
    return True


def build_create_or_join(
    *, request: BuildRequest, caller: Caller, tower: TowerContext | None, before_start: Callable[[], None]
) -> BuildAnswer:
    """The build of `request`'s target: none needed (cached), the active one, or a new one (`before_start` is
    called first: it counts the build toward the caller's rate and may refuse it). A caller outside the
    credential scope of the build answered must be able to read its images (builds.access: InvalidRequest)."""
    target = request.target
    if target_exists(target):
        last = Build.objects.filter(target_image=target).order_by("-number").first()
        _images_check(request, last, tower)
        return BuildAnswer(target=target, build_id=last.build_id if last else "", build=last, cached=True,
                           started=False)  # fmt: skip
    for _attempt in range(5):
        active = Build.objects.filter(target_image=target, state__in=Build.ACTIVE).first()
        if active is not None:
            _images_check(request, active, tower)
            return BuildAnswer(target=target, build_id=active.build_id, build=active, cached=False, started=False)
        before_start()
        try:
            with transaction.atomic():
                build = _create(request, caller=caller, tower=tower)
        except IntegrityError:
            continue  # a concurrent identical request created it (or took the number): join it
        transaction.on_commit(functools.partial(build_enqueue, build_pk=build.pk))
        usage_count_quietly(kind=UsageKind.BUILDS, email=build.user_email, platform=build.platform)
        logger.info("build %s of %s created", build.build_id, target)
        return BuildAnswer(target=target, build_id=build.build_id, build=build, cached=False, started=True)
    raise RuntimeError(f"could not create or join a build of {target}")


def _images_check(request: BuildRequest, build: Build | None, tower: TowerContext | None) -> None:
    """A caller gets a build made with another's credentials only if theirs read its images (builds.access)."""
    if not same_scope(build, tower):
        build_images_check(container_file=request.container_file, platform=request.platform, tower=tower)


def _create(request: BuildRequest, *, caller: Caller, tower: TowerContext | None) -> Build:
    cid = request.container_id
    last = Build.objects.filter(container_id=cid).aggregate(last=Max("number"))["last"] or 0
    now = timezone.now()
    return Build.objects.create(
        build_id=build_id(container_id=cid, number=last + 1),
        container_id=cid,
        number=last + 1,
        target_image=request.target,
        repository=request.repository,
        cache_repository=request.cache_repository,
        platform=request.platform,
        container_file=request.container_file,
        conda_file=request.conda_file,
        spack_file=request.spack_file,
        context_digest=request.context_digest,
        created_at=now,
        queued_at=now,
        **caller_fields(caller, tower),
    )


def caller_fields(caller: Caller, tower: TowerContext | None) -> dict[str, object]:
    """The Build row's fields naming who asked (a build's or a mirror's)."""
    return {
        "client_ip": caller.ip, "user_id": caller.user_id, "user_name": caller.user_name, "user_email": caller.email,
        "tower_auth_id": tower.auth_id if tower is not None else None,
        "tower_endpoint": tower.endpoint if tower is not None else "",
        "tower_workspace_id": tower.workspace_id if tower is not None else None,
    }  # fmt: skip


def build_enqueue(*, build_pk: int) -> None:
    """Send the build's task. A broker that is down loses nothing: the reaper sends it again."""
    from builds.tasks import build_run_task

    try:
        build_run_task.apply_async((build_pk,), retry=False)
    except OperationalError as exc:
        logger.warning("build %d not sent (%s): the reaper sends it later", build_pk, exc)


def build_context_settled(*, gzip_digest: str, failure_reason: str = "") -> int:
    """A build context layer was fetched (or failed): send the pending builds waiting for it, or fail them with
    the download's reason; the number of builds concerned."""
    # Freeze builds wait for the layers their Containerfile adds the same way (builds.freeze).
    waiting = Build.objects.filter(Q(context_digest=gzip_digest) | freeze_waiting(gzip_digest), state=State.PENDING)
    if not failure_reason or blob_exists(blob_key(gzip_digest)):  # another URL may have brought the same bytes
        pks = list(waiting.values_list("pk", flat=True))
        for pk in pks:
            build_enqueue(build_pk=pk)
        return len(pks)
    return waiting.update(
        state=State.FAILED, failure_reason=f"Build context download failed: {failure_reason}",
        finished_at=timezone.now(),
    )  # fmt: skip


# Who can tell why a build context did not arrive (by its gzip digest): requests_app registers the layer
# downloads' answer at start (builds never imports requests_app). None: not failed (yet).
ContextFailure = Callable[[str], str | None]
context_failure_sources: list[ContextFailure] = []


def _context_failure(gzip_digest: str) -> str | None:
    for source in context_failure_sources:
        reason = source(gzip_digest)
        if reason:
            return reason
    return None


def build_claim(*, build_pk: int) -> str | None:
    """Claim a pending build for this process; the claim id, or None when it is not pending (nothing to do)."""
    claim = new_claim_id()
    now = timezone.now()
    claimed = Build.objects.filter(pk=build_pk, state=State.PENDING).update(
        state=State.RUNNING, claimed_by=claim, attempts=F("attempts") + 1, started_at=now, heartbeat_at=now
    )
    return claim if claimed == 1 else None


def build_heartbeat(*, build_pk: int, claim: str) -> bool:
    """The claim is alive; False when it is no longer ours (cancelled, or failed by the reaper)."""
    return Build.objects.filter(pk=build_pk, claimed_by=claim, state=State.RUNNING).update(
        heartbeat_at=timezone.now()
    ) == 1  # fmt: skip


def build_give_back(*, build_pk: int, claim: str) -> bool:
    """Queue again a build this claim holds (its worker is stopping: the attempt does not count); sent once that
    worker no longer takes tasks."""
    given_back = Build.objects.filter(pk=build_pk, claimed_by=claim, state=State.RUNNING).update(
        state=State.PENDING, claimed_by="", attempts=F("attempts") - 1, heartbeat_at=None, started_at=None,
        queued_at=timezone.now(), sent_at=None, resends=0,
    )  # fmt: skip
    if given_back:
        logger.info("build %d given back to the queue: its worker is stopping", build_pk)
        jobs_after_stop(functools.partial(build_enqueue, build_pk=build_pk))
    return given_back == 1


def build_finish(
    *, build_pk: int, claim: str, succeeded: bool, digest: str = "", exit_status: int | None = None, reason: str = ""
) -> bool:
    """Settle a running build; only the holder of the claim may (False, nothing written, for anyone else)."""
    finished = Build.objects.filter(pk=build_pk, claimed_by=claim, state=State.RUNNING).update(
        state=State.SUCCEEDED if succeeded else State.FAILED, digest=digest if succeeded else "",
        exit_status=exit_status, failure_reason="" if succeeded else reason, finished_at=timezone.now(),
    )  # fmt: skip
    if finished and succeeded:
        target = Build.objects.filter(pk=build_pk).values_list("target_image", flat=True).first()
        if target:
            shared_cache().set(exists_key(target), True, EXISTS_CACHE_TTL)
    return finished == 1


def build_cancel(*, build: Build, by: str) -> bool:
    """Cancel a pending or running build (a running one is killed by its worker within a heartbeat)."""
    cancelled = Build.objects.filter(pk=build.pk, state__in=Build.ACTIVE).update(
        state=State.CANCELLED, failure_reason=f"Build cancelled by {by}", finished_at=timezone.now()
    )
    if cancelled:
        logger.info("build %s cancelled by %s", build.build_id, by)
        build.refresh_from_db()
    return cancelled == 1


def tower_context_of(build: Build) -> TowerContext | None:
    """The caller's Tower session a build remembers (its FROM images are pulled with their credentials)."""
    return TowerContext.of(
        auth_id=build.tower_auth_id, endpoint=build.tower_endpoint, workspace_id=build.tower_workspace_id,
        user_id=build.user_id, user_name=build.user_name,
    )  # fmt: skip


class BuildActive(Exception):
    """A build of that target is still pending or running: no rebuild."""


def build_rebuild(*, build: Build) -> Build:
    """Build the same inputs again, as the next build of its containerId (none of that target may be active)."""
    request = BuildRequest(
        container_file=build.container_file, platform=build.platform, repository=build.repository,
        conda_file=build.conda_file, spack_file=build.spack_file, cache_repository=build.cache_repository,
        context_digest=build.context_digest, target_image=build.target_image,
    )  # fmt: skip
    caller = Caller(ip=build.client_ip, user_id=build.user_id, user_name=build.user_name, email=build.user_email,
                    tower_endpoint=build.tower_endpoint)  # fmt: skip
    try:
        with transaction.atomic():
            rebuilt = _create(request, caller=caller, tower=tower_context_of(build))
    except IntegrityError:
        raise BuildActive(f"A build of {build.target_image} is already pending or running") from None
    shared_cache().delete(exists_key(rebuilt.target_image))
    transaction.on_commit(functools.partial(build_enqueue, build_pk=rebuilt.pk))
    return rebuilt


@dataclass(frozen=True)
class Reaped:
    failed: int  # running, its worker silent past the stale threshold (or past timeout + grace)
    resent: int  # pending too long (a doubling wait after each send): sent again


def stale_after() -> int:
    return settings.WAVE_BUILD_STALE_AFTER


def build_reap(*, now: dt.datetime | None = None) -> Reaped:
    """Fail builds whose worker went silent ("build worker lost"), or that outlived the build timeout by the
    grace period, and send again pending builds nobody took. Compare-and-set on what was read, so concurrent
    reapers or a last heartbeat never act twice on one row."""
    now = now or timezone.now()
    stale = now - dt.timedelta(seconds=stale_after())
    overdue = now - dt.timedelta(seconds=settings.WAVE_BUILD_TIMEOUT + settings.WAVE_BUILD_GRACE)
    failed = 0
    lost = Build.objects.filter(state=State.RUNNING).filter(Q(heartbeat_at__lt=stale) | Q(started_at__lt=overdue))
    for pk, claim, build_name in lost.values_list("pk", "claimed_by", "build_id"):
        if lost.filter(pk=pk, claimed_by=claim).update(
            state=State.FAILED, failure_reason="build worker lost", finished_at=now
        ):
            failed += 1
            logger.warning("build %s failed: no heartbeat from its worker %s since %s", build_name, claim, stale)
    pending = Build.objects.filter(state=State.PENDING)
    # A build whose context download failed unseen (the settle's callback lost with its process) ends here.
    waiting_for_context = pending.exclude(context_digest="").filter(queued_at__lt=stale)
    for pk, digest in waiting_for_context.values_list("pk", "context_digest"):
        reason = None if blob_exists(blob_key(digest)) else _context_failure(digest)
        if reason and pending.filter(pk=pk).update(
            state=State.FAILED, failure_reason=f"Build context download failed: {reason}", finished_at=now
        ):
            failed += 1
    resent = jobs_due_again(pending, now=now, stale_after=stale_after(), what="build")
    for pk in resent:
        transaction.on_commit(functools.partial(build_enqueue, build_pk=pk))
    return Reaped(failed=failed, resent=len(resent))
