"""Layer downloads as durable jobs: one LayerDownload row per exact layer (URL, size, digests).

The pattern of ARCHITECTURE.md "Durable jobs", one small service per step:
- `layer_download_create_or_join`, at request time in the request's transaction: requests naming the
  same layer share one row; a new row (or a failed one, retried) is enqueued once that transaction commits.
- `layer_download_claim`: the task's compare-and-set QUEUED -> RUNNING; a duplicate or redelivered
  message claims nothing and does nothing.
- `layer_download_heartbeat`: proof of life every few seconds, by primary key and claim id.
- `layer_download_finish`: RUNNING -> READY or FAILED, for the holder of the claim only, settling every
  pending InjectedLayer joined to the row in the same transaction.
- `layer_download_reap` (beat): RUNNING rows whose heartbeat went stale (a killed worker or pool child)
  are re-queued, or failed with a reason once claimed WAVE_LAYER_DOWNLOAD_MAX_ATTEMPTS times; QUEUED rows
  that no worker took (the broker lost the message) are sent again.

Guarantees: every accepted http layer ends READY or FAILED with a reason, whatever the broker lost and
whichever worker died, within stale threshold + reap interval + the download's own time once a worker
and beat run again. One claim works on a row at a time; a worker whose claim was taken stops without
writing. Two rows with the same digests and different URLs are independent (the blob is written whole,
by digest). Reasons and log lines never show a URL's user info or signatures.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from kombu.exceptions import OperationalError

from requests_app.fetch import FetchCancelled, LayerFetchError, fetch_verified
from requests_app.models import InjectedLayer, LayerDownload
from wave_site.blobstore import blob_exists, blob_key, blob_scratch_file, blob_store_put_file
from wave_site.errors import unexpected_error_message
from wave_site.jobs import heartbeat, new_claim_id, release_connection
from wave_site.redact import redact_url

logger = logging.getLogger(__name__)
State = LayerDownload.State


def layer_download_create_or_join(
    *, url: str, gzip_size: int, gzip_digest: str, tar_digest: str, is_blob_stored: bool
) -> LayerDownload:
    """The download of this exact layer, created or joined, and locked until the caller's transaction ends.

    Call it inside the transaction that stores the joining layers. The row lock orders the join against
    a finishing download: either the finish sees the joined layer, or the join sees the finished state.
    A FAILED row is tried again, and so is a READY one whose blob is gone (`is_blob_stored` False).
    """
    identity = LayerDownload.identity_of(url=url, gzip_size=gzip_size, gzip_digest=gzip_digest, tar_digest=tar_digest)
    download, created = LayerDownload.objects.select_for_update().get_or_create(
        identity=identity,
        defaults={"url": url, "gzip_size": gzip_size, "gzip_digest": gzip_digest, "tar_digest": tar_digest},
    )
    again = download.state == State.FAILED or (download.state == State.READY and not is_blob_stored)
    requeued = again and _requeue_finished(download)
    if requeued:
        download.refresh_from_db()
    if created or requeued:
        transaction.on_commit(functools.partial(layer_download_enqueue, download_pk=download.pk))
    return download


def _requeue_finished(download: LayerDownload) -> bool:
    fresh = {"state": State.QUEUED, "attempts": 0, "claimed_by": "", "queued_at": timezone.now(),
             "started_at": None, "heartbeat_at": None, "finished_at": None, "failure_reason": "",
             "blob_key": ""}  # fmt: skip
    return LayerDownload.objects.filter(pk=download.pk, state=download.state).update(**fresh) == 1


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
    return True


@dataclass(frozen=True)
class Reaped:
    requeued: int  # running, with a stale heartbeat: queued again
    failed: int  # running, with a stale heartbeat, out of attempts
    resent: int  # queued too long: sent again


def layer_download_reap(*, now: dt.datetime | None = None) -> Reaped:
    """Re-queue or fail downloads whose worker went silent, and send again those nobody took.

    Each change is a compare-and-set on what was read, so concurrent reapers (or a worker beating at
    the last moment) never act twice on one row.
    """
    now = now or timezone.now()
    stale = now - dt.timedelta(seconds=settings.WAVE_LAYER_DOWNLOAD_STALE_AFTER)
    requeued = failed = resent = 0
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
        elif row.update(state=State.QUEUED, claimed_by="", heartbeat_at=None, queued_at=now):
            requeued += 1
            logger.warning("layer download %d re-queued: no heartbeat from %s since %s", pk, claim, stale)
            transaction.on_commit(functools.partial(layer_download_enqueue, download_pk=pk))
    waiting = LayerDownload.objects.filter(state=State.QUEUED, queued_at__lt=stale)
    for pk, queued_at in waiting.values_list("pk", "queued_at"):
        if waiting.filter(pk=pk, queued_at=queued_at).update(queued_at=now):
            resent += 1
            transaction.on_commit(functools.partial(layer_download_enqueue, download_pk=pk))
    return Reaped(requeued=requeued, failed=failed, resent=resent)


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
    state, reason = State.READY, ""
    try:
        with heartbeat(beat, every=settings.WAVE_LAYER_DOWNLOAD_HEARTBEAT) as lost:
            _fetch_into_store(download, is_cancelled=lost.is_set)
    except FetchCancelled:
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
