"""One run of a build, the task's body: claim, build with heartbeats and a live log, finish.

Idempotent: a build that is not pending (running elsewhere, finished, cancelled, gone) is left alone. The log
goes to the blob store as it comes (at least every second while output flows), so that a page on any web
process follows it. A build cancelled meanwhile, or taken back by the reaper, is killed by the builder within
a heartbeat; a worker that stops gives its build back to the queue.
"""

from __future__ import annotations

import functools
import logging
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import connections

from builds.backends import builder
from builds.backends.base import BuildJob, BuildOutcome
from builds.backends.buildah import work_dirs_sweep
from builds.freeze import freeze_context, freeze_layer_missing
from builds.logs import build_log_append, build_log_text
from builds.models import Build
from builds.recipes import conda_lock_extract
from builds.recipes.conda import ENVIRONMENT_FILE
from builds.recipes.lock import LOCK_START
from builds.recipes.spack import SPACK_FILE
from builds.services import build_claim, build_finish, build_give_back, build_heartbeat, tower_context_of
from credentials.lookups import tower_registry_credentials
from credentials.policy import is_service_repository, repository_host
from credentials.provider import credentials_lookup, service_credentials
from registry.client import Credentials, CredentialsLookup
from registry.platform import parse_platform
from wave_site.blobstore import blob_exists, blob_key, blob_open
from wave_site.errors import unexpected_error_message
from wave_site.jobs import heartbeat, is_worker_stopping, release_connection

logger = logging.getLogger(__name__)

LOG_FLUSH_SECONDS = 1.0
CONTEXT_MAX_ENTRIES = 100_000
LOG_FLUSH_BYTES = 64 * 1024


class LogSink:
    """Collects the builder's output and appends it to the build's log in chunks (thread-safe): at once past
    LOG_FLUSH_BYTES, else within LOG_FLUSH_SECONDS, also while the build prints nothing (a thread flushes what
    waits), so that a page shows the last lines before a long quiet step."""

    def __init__(self, build: Build) -> None:
        self.build = build
        self.pending: list[str] = []
        self.size = 0
        self.flushed_at = time.monotonic()
        self.lock = threading.Lock()
        self.closed = threading.Event()
        self.flusher = threading.Thread(target=self._flush_while_open, name="build-log", daemon=True)
        self.flusher.start()

    def __call__(self, text: str) -> None:
        with self.lock:
            self.pending.append(text)
            self.size += len(text)
            if self.size >= LOG_FLUSH_BYTES or time.monotonic() - self.flushed_at >= LOG_FLUSH_SECONDS:
                self._flush()

    def close(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            self.flusher.join()
        with self.lock:
            self._flush()

    def _flush_while_open(self) -> None:
        try:
            while not self.closed.wait(LOG_FLUSH_SECONDS / 2):
                with self.lock:
                    if self.pending and time.monotonic() - self.flushed_at >= LOG_FLUSH_SECONDS / 2:
                        self._flush()
        finally:
            connections.close_all()  # this thread's connections only

    def _flush(self) -> None:
        if self.pending:
            text, self.pending, self.size = "".join(self.pending), [], 0
            try:
                build_log_append(build=self.build, text=text)
            except Exception as exc:  # noqa: BLE001 - a log that cannot be written must not fail the build
                logger.warning("build %s: log not written (%s)", self.build.build_id, type(exc).__name__)
        self.flushed_at = time.monotonic()


def build_credentials(build: Build) -> CredentialsLookup:
    """The registry logins of a build: the service's own for the hosts of its build and cache repositories
    (it pushes there), the caller's (Tower, else the service's) for the hosts of the FROM images."""
    tower = tower_context_of(build)
    callers = credentials_lookup(tower)
    repositories = [name for name in (build.repository, build.cache_repository) if name]
    own = {repository_host(name) for name in repositories if is_service_repository(name)}
    # A repository of the caller's own (only Tower callers may name one): their credentials alone, never ours.
    theirs = {repository_host(name) for name in repositories if not is_service_repository(name)}

    def lookup(registry: str) -> Credentials | None:
        registry = registry.lower()
        if registry in own:
            return service_credentials(registry)
        if registry in theirs:
            return tower_registry_credentials(context=tower, registry=registry) if tower is not None else None
        return callers(registry)

    return lookup


def recipe_files(build: Build) -> dict[str, bytes]:
    """The files a recipe build's Containerfile COPYs from its context (builds.recipes), from the recipe text kept
    in its row: the worker needs no disk shared with the web process that generated them."""
    files = {}
    if build.conda_file:
        files[ENVIRONMENT_FILE] = build.conda_file.encode()
    if build.spack_file:
        files[SPACK_FILE] = build.spack_file.encode()
    return files


@contextmanager
def build_context(build: Build) -> Iterator[Path | None]:
    """The build context: the request's `buildContext` layer (verified when it was stored) unpacked in a
    folder of its own, then a recipe's files written into it; removed afterwards. None for an empty context."""
    recipes = recipe_files(build)
    if not build.context_digest and not recipes:
        yield None
        return
    # Beside the builds' work dirs: swept with them if a killed worker leaves it (builds.backends.buildah).
    with tempfile.TemporaryDirectory(prefix=f"{build.build_id}-context-", dir=_scratch_root()) as folder:
        if build.context_digest:
            _context_unpack(build.context_digest, into=folder)
        for name, data in recipes.items():  # the recipe wins over a file of the same name in the layer
            path = Path(folder) / name
            path.unlink(missing_ok=True)  # a link the layer left there is replaced, never followed
            path.write_bytes(data)
        yield Path(folder)


def _context_unpack(gzip_digest: str, *, into: str) -> None:
    with blob_open(blob_key(gzip_digest)) as handle, tarfile.open(fileobj=handle, mode="r|gz") as archive:
        unpacked = 0
        limit = settings.WAVE_LAYER_DOWNLOAD_MAX_BYTES
        for entries, member in enumerate(archive, start=1):  # streamed: refused before passing the bound
            unpacked += member.size if member.isfile() else 0
            if unpacked > limit or entries > CONTEXT_MAX_ENTRIES:
                raise ContextRefused(
                    f"The build context unpacks to more than {limit} bytes or {CONTEXT_MAX_ENTRIES} entries"
                )
            archive.extract(member, into, filter="data")  # no links out, no devices, no absolute paths


def conda_lock_keep(*, build: Build, claim: str) -> str:
    """The Conda lock a build printed (recipes whose Containerfile prints one), kept in its row while this claim
    holds it; the lock ("" when none)."""
    if LOCK_START not in build.container_file:
        return ""  # no need to read the log back
    lock = conda_lock_extract(build_log_text(build=build))
    if lock:
        Build.objects.filter(pk=build.pk, claimed_by=claim, state=Build.State.RUNNING).update(conda_lock=lock)
    return lock


class ContextRefused(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _scratch_root() -> Path:
    root = settings.DATA_DIR / "builds"
    root.mkdir(parents=True, exist_ok=True)
    return root


def build_run(*, build_pk: int) -> str:
    """Claim, build, finish; the state left."""
    sweep_dead_work_dirs()
    waiting_for = _context_missing(build_pk) or _freeze_layer_missing(build_pk)
    if waiting_for:
        logger.info("build %d waits for its build context %s", build_pk, waiting_for)
        return _state_of(build_pk)  # sent again once the context arrives (build_context_settled) or by the reaper
    claim = build_claim(build_pk=build_pk)
    if claim is None:
        return _state_of(build_pk)
    build = Build.objects.get(pk=build_pk)
    sink = LogSink(build)
    beat = functools.partial(build_heartbeat, build_pk=build_pk, claim=claim)
    give_back = functools.partial(build_give_back, build_pk=build_pk, claim=claim)
    try:
        with (
            build_context(build) as unpacked,
            freeze_context(
                build.container_file, unpacked, repository=build.repository, scratch=_scratch_root()
            ) as context,
            heartbeat(beat, every=settings.WAVE_BUILD_HEARTBEAT, give_back=give_back) as lost,
        ):
            job = BuildJob(
                build_id=build.build_id, container_file=build.container_file, context_dir=context,
                platform=parse_platform(build.platform), target=build.target_image,
                cache_repository=build.cache_repository or None,
                credentials=build_credentials(build),
                timeout=float(settings.WAVE_BUILD_TIMEOUT), network=settings.WAVE_BUILD_NETWORK,
            )  # fmt: skip
            release_connection()  # none held through the build: the finish must survive a database restart
            outcome = builder().build(job, log=sink, should_stop=lost.is_set)
            if lost.is_set():
                sink.close()
                if not is_worker_stopping():
                    logger.warning("build %s stopped: cancelled, or its claim was taken", build.build_id)
                return _state_of(build_pk)
    except ContextRefused as exc:
        outcome = _failed(exc.message)
    except (tarfile.TarError, EOFError, OSError) as exc:
        outcome = _failed(f"The build context could not be unpacked: {type(exc).__name__}")
    except SoftTimeLimitExceeded:
        outcome = _failed(f"Container image build timed out '{build.target_image}'")
    except Exception as exc:  # noqa: BLE001 - a claimed build must end with a reason; the traceback goes to the log
        outcome = _failed(f"Build failed: {unexpected_error_message(exc)}")
    sink.close()
    try:
        conda_lock_keep(build=build, claim=claim)
    except Exception as exc:  # noqa: BLE001 - a lock that cannot be read back must not change the build's outcome
        logger.warning("build %s: Conda lock not kept (%s)", build.build_id, type(exc).__name__)
    if not outcome.succeeded:
        logger.warning("build %s failed: %s", build.build_id, outcome.failure_reason)
    finished = build_finish(
        build_pk=build_pk, claim=claim, succeeded=outcome.succeeded, digest=outcome.digest,
        exit_status=outcome.exit_status, reason=outcome.failure_reason,
    )  # fmt: skip
    if finished:
        logger.info("build %s %s", build.build_id, "succeeded" if outcome.succeeded else "failed")
    return _state_of(build_pk)


def _context_missing(build_pk: int) -> str:
    """The digest of the build context this build still waits for ("" when it has none or it is stored)."""
    digest = Build.objects.filter(pk=build_pk).values_list("context_digest", flat=True).first() or ""
    return digest if digest and not blob_exists(blob_key(digest)) else ""


# --- Freeze (builds.freeze): the sealed layers of a freeze Containerfile are in the blob store before it runs.
def _freeze_layer_missing(build_pk: int) -> str:
    row = Build.objects.filter(pk=build_pk).values_list("container_file", "repository").first()
    return freeze_layer_missing(row[0], repository=row[1]) if row is not None else ""


def sweep_dead_work_dirs() -> None:
    """Remove work dirs that builds of killed workers left here (older than any build may run)."""
    try:
        for path in work_dirs_sweep(older_than=settings.WAVE_BUILD_TIMEOUT + settings.WAVE_BUILD_GRACE):
            logger.info("removed the work dir of a dead build: %s", path.name)
    except OSError as exc:
        logger.warning("work dirs of dead builds not swept: %s", exc)


def _failed(reason: str) -> BuildOutcome:
    return BuildOutcome(succeeded=False, exit_status=None, digest="", failure_reason=reason)


def _state_of(build_pk: int) -> str:
    return Build.objects.filter(pk=build_pk).values_list("state", flat=True).first() or "gone"
