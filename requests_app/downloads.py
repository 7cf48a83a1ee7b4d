"""Layer downloads as durable jobs: one LayerDownload row per exact layer (URL, size, digests).

The pattern of ARCHITECTURE.md "Durable jobs", one small service per step:
- `layer_download_cap_check` then `layer_download_create_or_join_all`, at request time (the latter in the
  request's transaction): requests naming the same layer share one row; a new row (or a failed one,
  retried) is enqueued once that transaction commits. The rows a request starts count against its client's
  cap (WAVE_MAX_ACTIVE_DOWNLOADS_PER_CLIENT queued or running at once): beyond it the request is refused
  and nothing is stored, so that one client cannot fill every download slot.
- `layer_download_claim`: the task's compare-and-set QUEUED -> RUNNING; a duplicate or redelivered
  message claims nothing and does nothing.
- `layer_download_heartbeat`: proof of life every few seconds, by primary key and claim id.
- `layer_download_give_back`: a worker stopping (warm shutdown) puts the download it holds back in the
  queue at once, without counting the attempt, and sends it again once it no longer takes tasks itself;
  the next worker takes it up.
- `layer_download_finish`: RUNNING -> READY or FAILED, for the holder of the claim only, settling every
  pending InjectedLayer joined to the row in the same transaction.
- `layer_download_reap` (beat): RUNNING rows whose heartbeat went stale (a killed worker or pool child)
  are re-queued, or failed with a reason once claimed WAVE_LAYER_DOWNLOAD_MAX_ATTEMPTS times; QUEUED rows
  that no worker took (the broker lost the message, or every slot is busy) are sent again, the wait doubling
  after each send (one stale period, then 2, 4, 8, at most 16), so that a backlog does not multiply messages.

Guarantees: every accepted http layer ends READY or FAILED with a reason, whatever the broker lost and
whichever worker died, within stale threshold + reap interval + the download's own time once a worker
and beat run again (a message lost after k sends in a backlog: within 2^k stale periods, at most 16).
One claim works on a row at a time; a worker whose claim was taken stops without writing. Two rows with
the same digests and different URLs are independent (the blob is written whole, by digest). Reasons and
log lines never show a URL's user info or signatures.

The task runs in a pool of threads (`manage.py run`'s downloads worker), or of processes: each step takes
its thread's own database connection and gives it back before the fetch; heartbeats give theirs back
after each beat, so that a download holds no pooled connection while it waits on the network.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone
from kombu.exceptions import OperationalError

from builds.services import build_context_settled
from requests_app.fetch import FetchCancelled, LayerFetchError, fetch_verified
from requests_app.layers import LayerSpec
from requests_app.models import InjectedLayer, LayerDownload
from wave_site.blobstore import blob_exists, blob_key, blob_scratch_file, blob_store_put_file
from wave_site.errors import InvalidRequest, RateLimited, unexpected_error_message
from wave_site.jobs import (
    heartbeat,
    is_worker_stopping,
    jobs_after_stop,
    jobs_due_again,
    new_claim_id,
    release_connection,
)
from wave_site.redact import redact_url

logger = logging.getLogger(__name__)
State = LayerDownload.State
ACTIVE = (State.QUEUED, State.RUNNING)
# Seconds a client over its cap is told to wait: about the time a small download takes to finish.
CAP_RETRY_AFTER = 30


def layer_download_cap_check(*, layers: list[LayerSpec], client: str) -> None:
    """Refuse, before anything is stored, a request whose http layers would take `client` over its cap.

    Layers whose download is queued, running or ready already start nothing and cost nothing; the exact
    count is taken again in the request's transaction (`layer_download_create_or_join_all`).
    """
    identities = {_identity(layer) for layer in layers if not layer.is_inline}
    if not identities or settings.WAVE_MAX_ACTIVE_DOWNLOADS_PER_CLIENT <= 0:
        return
    known = LayerDownload.objects.filter(identity__in=identities, state__in=(*ACTIVE, State.READY))
    adding = len(identities - set(known.values_list("identity", flat=True)))
    _refuse_over_cap(client=client, active=_active_count(client) if adding else 0, adding=adding)


def layer_download_create_or_join_all(
    *, layers: list[LayerSpec], stored: set[str], client: str
) -> dict[int, LayerDownload]:
    """The download of each http layer of a request, by position: call it inside the request's transaction.

    Created or joined in one order (by identity), so that two requests naming the same layers never wait on
    each other's row locks in opposite orders; the client's requests one at a time, so that the downloads
    they start are counted exactly: beyond the cap, InvalidRequest or RateLimited is raised (and the caller's
    transaction, with every row it wrote, is rolled back). `stored`: gzip digests whose blob is stored.
    """
    http = sorted((layer for layer in layers if not layer.is_inline), key=_identity)
    if not http:
        return {}
    _serialize_client(client)
    joined, started = {}, 0
    for layer in http:
        download, is_started = _create_or_join(
            url=layer.url, gzip_size=layer.gzip_size, gzip_digest=layer.gzip_digest, tar_digest=layer.tar_digest,
            is_blob_stored=layer.gzip_digest in stored, client=client,
        )  # fmt: skip
        joined[layer.position] = download
        started += is_started
    if started:
        _refuse_over_cap(client=client, active=_active_count(client) - started, adding=started)
    return joined


def layer_download_create_or_join(
    *, url: str, gzip_size: int, gzip_digest: str, tar_digest: str, is_blob_stored: bool, client: str = ""
) -> LayerDownload:
    """The download of this exact layer, created or joined, and locked until the caller's transaction ends.

    Call it inside the transaction that stores the joining layers. The row lock orders the join against
    a finishing download: either the finish sees the joined layer, or the join sees the finished state.
    A FAILED row is tried again, and so is a READY one whose blob is gone (`is_blob_stored` False); a row
    created or tried again is `client`'s.
    """
    return _create_or_join(
        url=url, gzip_size=gzip_size, gzip_digest=gzip_digest, tar_digest=tar_digest, is_blob_stored=is_blob_stored,
        client=client,
    )[0]  # fmt: skip


def _create_or_join(
    *, url: str, gzip_size: int, gzip_digest: str, tar_digest: str, is_blob_stored: bool, client: str
) -> tuple[LayerDownload, bool]:
    """The download, and whether this call started it (created it, or queued a finished one again)."""
    identity = LayerDownload.identity_of(url=url, gzip_size=gzip_size, gzip_digest=gzip_digest, tar_digest=tar_digest)
    download, created = LayerDownload.objects.select_for_update().get_or_create(
        identity=identity,
        defaults={"url": url, "gzip_size": gzip_size, "gzip_digest": gzip_digest, "tar_digest": tar_digest,
                  "client": client},
    )  # fmt: skip
    again = download.state == State.FAILED or (download.state == State.READY and not is_blob_stored)
    requeued = again and _requeue_finished(download, client=client)
    if requeued:
        download.refresh_from_db()
    if created or requeued:
        transaction.on_commit(functools.partial(layer_download_enqueue, download_pk=download.pk))
    return download, created or requeued


def _requeue_finished(download: LayerDownload, *, client: str) -> bool:
    fresh = {"state": State.QUEUED, "attempts": 0, "claimed_by": "", "queued_at": timezone.now(), "sent_at": None,
             "resends": 0, "client": client, "started_at": None, "heartbeat_at": None, "finished_at": None,
             "failure_reason": "", "blob_key": ""}  # fmt: skip
    return LayerDownload.objects.filter(pk=download.pk, state=download.state).update(**fresh) == 1


def _identity(layer: LayerSpec) -> str:
    return LayerDownload.identity_of(
        url=layer.url, gzip_size=layer.gzip_size, gzip_digest=layer.gzip_digest, tar_digest=layer.tar_digest
    )


def _active_count(client: str) -> int:
    return LayerDownload.objects.filter(client=client, state__in=ACTIVE).count()


def _serialize_client(client: str) -> None:
    """Until the caller's transaction ends, hold a lock of `client`'s own: its requests count and start their
    downloads one at a time. PostgreSQL: a transaction-level advisory lock; SQLite already runs one writing
    transaction at a time (transaction mode IMMEDIATE)."""
    if connection.vendor == "postgresql":
        digest = hashlib.sha256(f"wave-layer-download-client:{client}".encode()).digest()
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [int.from_bytes(digest[:8], "big", signed=True)])


def _refuse_over_cap(*, client: str, active: int, adding: int) -> None:
    """InvalidRequest when `adding` downloads alone exceed the cap, RateLimited when `active` ones leave too few."""
    cap = settings.WAVE_MAX_ACTIVE_DOWNLOADS_PER_CLIENT
    if cap <= 0 or adding == 0 or active + adding <= cap:
        return
    if adding > cap:
        raise InvalidRequest(
            f"This request needs {adding} layer downloads; a client may have at most {cap} queued or running at once"
        )
    logger.info("request of %s refused: %d layer downloads queued or running, %d more asked", client, active, adding)
    raise RateLimited(
        f"Too many layer downloads in progress for this client ({active} queued or running, this request needs "
        f"{adding} more, at most {cap} at once) - retry in {CAP_RETRY_AFTER} seconds",
        retry_after=CAP_RETRY_AFTER,
    )


def layer_download_enqueue(*, download_pk: int) -> None:
    """Send the task of a queued download. A broker that is down loses nothing: the reaper sends it again."""
    from requests_app.tasks import layer_download_task

    try:
        # No publishing retries: a request must not wait for a broker that is down; the reaper retries.
        layer_download_task.apply_async((download_pk,), retry=False)
    except OperationalError as exc:
        logger.warning("layer download %d not sent (%s): the reaper sends it later", download_pk, exc)


def layer_download_claim(*, download_pk: int) -> str | None:
    """Claim a queued download for this process; the claim id, or None when it is not queued (nothing to do)."""
    claim = new_claim_id()
    now = timezone.now()
    claimed = LayerDownload.objects.filter(pk=download_pk, state=State.QUEUED).update(
        state=State.RUNNING, claimed_by=claim, attempts=F("attempts") + 1, started_at=now, heartbeat_at=now
    )
    return claim if claimed == 1 else None


def layer_download_heartbeat(*, download_pk: int, claim: str) -> bool:
    """The claim is alive; False when it is no longer ours (the reaper re-queued the download)."""
    return (
        LayerDownload.objects.filter(pk=download_pk, claimed_by=claim, state=State.RUNNING).update(
            heartbeat_at=timezone.now()
        )
        == 1
    )


def layer_download_give_back(*, download_pk: int, claim: str) -> bool:
    """Queue again a download this claim holds (its worker is stopping; the attempt does not count), and send
    it once that worker no longer takes tasks."""
    given_back = LayerDownload.objects.filter(pk=download_pk, claimed_by=claim, state=State.RUNNING).update(
        state=State.QUEUED, claimed_by="", attempts=F("attempts") - 1, heartbeat_at=None, queued_at=timezone.now(),
        sent_at=None, resends=0,
    )  # fmt: skip
    if given_back:
        logger.info("layer download %d given back to the queue: its worker is stopping", download_pk)
        jobs_after_stop(functools.partial(layer_download_enqueue, download_pk=download_pk))
    return given_back == 1


def layer_download_finish(*, download_pk: int, claim: str, state: str, reason: str = "") -> bool:
    """Settle a running download READY or FAILED (with `reason`) and every pending layer joined to it.

    Only the holder of the claim may: False (and nothing written) for anyone else.
    """
    with transaction.atomic():
        running = LayerDownload.objects.filter(pk=download_pk, claimed_by=claim, state=State.RUNNING)
        download = running.select_for_update().first()
        return download is not None and _settle(download, state=state, reason=reason)


def _settle(download: LayerDownload, *, state: str, reason: str) -> bool:
    """Within a transaction, on a row locked and checked by the caller: finish it, then its pending layers."""
    download.state, download.failure_reason, download.finished_at = state, reason, timezone.now()
    download.blob_key = blob_key(download.gzip_digest) if state == State.READY else ""
    download.save(update_fields=["state", "failure_reason", "finished_at", "blob_key"])
    download.layers.filter(state=InjectedLayer.State.PENDING).update(
        state=InjectedLayer.State.READY if state == State.READY else InjectedLayer.State.FAILED,
        failure_reason=reason,
        blob_key=download.blob_key,
        finished_at=download.finished_at,
    )
    # A build waiting for this layer as its build context goes on (or fails) once this is committed.
    transaction.on_commit(functools.partial(
        build_context_settled, gzip_digest=download.gzip_digest, failure_reason="" if state == State.READY else reason,
    ))  # fmt: skip
    return True


@dataclass(frozen=True)
class Reaped:
    requeued: int  # running, with a stale heartbeat: queued again
    failed: int  # running, with a stale heartbeat, out of attempts
    resent: int  # queued too long (a doubling wait after each send): sent again


def layer_download_reap(*, now: dt.datetime | None = None) -> Reaped:
    """Re-queue or fail downloads whose worker went silent, and send again those nobody took (with a doubling
    wait: wave_site.jobs.jobs_due_again).

    Each change is a compare-and-set on what was read, so concurrent reapers (or a worker beating at
    the last moment) never act twice on one row.
    """
    now = now or timezone.now()
    stale = now - dt.timedelta(seconds=settings.WAVE_LAYER_DOWNLOAD_STALE_AFTER)
    requeued = failed = 0
    silent = LayerDownload.objects.filter(state=State.RUNNING, heartbeat_at__lt=stale)
    for pk, claim, attempts in silent.values_list("pk", "claimed_by", "attempts"):
        row = silent.filter(pk=pk, claimed_by=claim)
        if attempts >= settings.WAVE_LAYER_DOWNLOAD_MAX_ATTEMPTS:
            reason = f"Layer download did not finish: its worker stopped {attempts} times"
            with transaction.atomic():
                download = row.select_for_update().first()
                if download is not None and _settle(download, state=State.FAILED, reason=reason):
                    failed += 1
                    logger.warning("layer download %d failed: %s", pk, reason)
        elif row.update(state=State.QUEUED, claimed_by="", heartbeat_at=None, queued_at=now, sent_at=None, resends=0):
            requeued += 1
            logger.warning("layer download %d re-queued: no heartbeat from %s since %s", pk, claim, stale)
            transaction.on_commit(functools.partial(layer_download_enqueue, download_pk=pk))
    queued = LayerDownload.objects.filter(state=State.QUEUED)
    resent = jobs_due_again(
        queued, now=now, stale_after=settings.WAVE_LAYER_DOWNLOAD_STALE_AFTER, what="layer download"
    )
    for pk in resent:
        transaction.on_commit(functools.partial(layer_download_enqueue, download_pk=pk))
    return Reaped(requeued=requeued, failed=failed, resent=len(resent))


def layer_download_run(*, download_pk: int) -> str:
    """The task's body: claim, fetch and verify into the blob store with heartbeats, finish; the state left.

    Idempotent: a download that is not queued (running elsewhere, finished, gone) is left alone.
    """
    claim = layer_download_claim(download_pk=download_pk)
    if claim is None:
        return _state_of(download_pk)
    download = LayerDownload.objects.get(pk=download_pk)
    release_connection()  # none held through the fetch: the finish must survive a database restart
    shown = redact_url(download.url)
    beat = functools.partial(layer_download_heartbeat, download_pk=download_pk, claim=claim)
    give_back = functools.partial(layer_download_give_back, download_pk=download_pk, claim=claim)
    state, reason = State.READY, ""
    try:
        with heartbeat(beat, every=settings.WAVE_LAYER_DOWNLOAD_HEARTBEAT, give_back=give_back) as lost:
            _fetch_into_store(download, is_cancelled=lost.is_set)
    except FetchCancelled:
        if not is_worker_stopping():
            logger.warning("layer download %d of %s stopped: its claim was taken (presumed dead)", download_pk, shown)
        return _state_of(download_pk)
    except LayerFetchError as exc:
        state, reason = State.FAILED, str(exc)
    except SoftTimeLimitExceeded:  # the fetch has its own deadline: the blob store hung
        state, reason = State.FAILED, "Layer download did not finish in time: the blob store did not answer"
    except Exception as exc:  # noqa: BLE001 - a claimed download must end with a reason; the traceback goes to the log
        state, reason = State.FAILED, f"Layer download failed: {unexpected_error_message(exc)}"
    if state == State.FAILED:
        logger.warning("layer download %d of %s failed: %s", download_pk, shown, reason)
    if not layer_download_finish(download_pk=download_pk, claim=claim, state=state, reason=reason):
        return _state_of(download_pk)  # the claim was taken at the last moment: the new holder finishes
    return state


def _state_of(download_pk: int) -> str:
    return LayerDownload.objects.filter(pk=download_pk).values_list("state", flat=True).first() or "gone"


def _fetch_into_store(download: LayerDownload, *, is_cancelled: Callable[[], bool]) -> None:
    key = blob_key(download.gzip_digest)
    with blob_scratch_file() as scratch:
        fetch_verified(
            download.url, gzip_size=download.gzip_size, gzip_digest=download.gzip_digest,
            tar_digest=download.tar_digest, into=scratch, is_cancelled=is_cancelled,
        )  # fmt: skip
        if not blob_exists(key):  # verified here, but another URL may have brought the same bytes
            blob_store_put_file(key, scratch)
