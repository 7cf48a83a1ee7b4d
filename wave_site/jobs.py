"""Helpers for durable jobs (ARCHITECTURE.md "Durable jobs"): claim ids, and heartbeats while a claim is held.

A job is a row claimed by its task with a compare-and-set that writes a claim id; while the task
works, a heartbeat thread proves the claim alive; a reaper re-queues rows whose heartbeat went stale, and
sends again those that no worker took (`jobs_due_again`).
Layer downloads use these (requests_app.downloads); builds reuse them. A task that finds a store down
logs one line (`outage_logged`) and leaves its row to the reaper. Everything here is safe in a thread
pool: database connections are per thread, and none is held while a job waits on the network. A worker
stopping (`jobs_stop`) makes every job of its process give its row back to the queue at once.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, connections
from django.db.models import F, Q, QuerySet

from wave_site.errors import outage_of

logger = logging.getLogger(__name__)
# A job nobody took is sent again after 1, 2, 4, 8, then every 16 stale periods.
RESEND_MAX_DOUBLINGS = 4
_stopping = threading.Event()
# The wake-up events of this process's heartbeats. No lock: `jobs_stop` runs in a signal handler, which
# must not wait for one; adding, discarding and copying a set are each atomic under the GIL.
_beating: set[threading.Event] = set()


_after_stop: list[Callable[[], None]] = []


def stop_marker(pid: int) -> Path:
    """A file saying that the worker whose main process is `pid` is stopping: its pool children (builds run in
    prefork processes, which a warm shutdown does not signal) see it at their next heartbeat."""
    return settings.DATA_DIR / "run" / f"worker-stopping-{pid}"


def jobs_stop(*, mark_for_children: bool = False) -> None:
    """This process stops (a worker's warm shutdown): every heartbeat gives its job back at once; with
    `mark_for_children`, the jobs of its pool processes too, at their next heartbeat."""
    _stopping.set()
    if mark_for_children:
        try:
            marker = stop_marker(os.getpid())
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
        except OSError as exc:
            logger.warning("pool processes not told to give their jobs back: %s", exc)
    for wake in tuple(_beating):
        wake.set()


def jobs_stop_forget() -> None:
    """The worker started or ended: no stop marker of this process's id remains (process ids are reused)."""
    stop_marker(os.getpid()).unlink(missing_ok=True)


def is_stopping() -> bool:
    """This process, or the worker whose pool process this is, is stopping."""
    return _stopping.is_set() or stop_marker(os.getppid()).exists()


def jobs_after_stop(callback: Callable[[], None]) -> None:
    """Run `callback` once this process's worker no longer takes tasks (`jobs_stopped`): a job given back
    is sent again then, so that the stopping worker does not take it up again itself. In a pool process
    (told by its worker's marker) it runs at once: the worker already stopped taking tasks."""
    if _stopping.is_set():
        _after_stop.append(callback)
    else:
        callback()


def jobs_stopped() -> None:
    """The worker stopped taking tasks: run what `jobs_after_stop` deferred."""
    while _after_stop:
        _after_stop.pop(0)()


def new_claim_id() -> str:
    """`host:pid:nonce`: unique per attempt, and tells an operator which process holds it."""
    return f"{socket.gethostname()[:100]}:{os.getpid()}:{secrets.token_hex(4)}"


def jobs_due_again(waiting: QuerySet[Any, Any], *, now: dt.datetime, stale_after: float, what: str) -> list[int]:
    """The rows of `waiting` (jobs no worker took yet, with `queued_at`, `sent_at` and `resends`) to send again,
    marked sent now; the caller sends them once its transaction commits.

    A row is due once it waited a stale period since it was last sent, then twice that, and so on up to
    2^RESEND_MAX_DOUBLINGS stale periods: a job lost by the broker is sent again soon, one waiting behind a
    backlog gets a few duplicate messages, not one per reap. A compare-and-set on what was read: concurrent
    reapers never take one row twice.
    """
    stale = now - dt.timedelta(seconds=stale_after)
    candidates = waiting.filter(Q(sent_at__lt=stale) | Q(sent_at__isnull=True, queued_at__lt=stale))
    due = []
    for pk, queued_at, sent_at, resends in candidates.values_list("pk", "queued_at", "sent_at", "resends"):
        wait = stale_after * 2 ** min(resends, RESEND_MAX_DOUBLINGS)
        if (sent_at or queued_at) > now - dt.timedelta(seconds=wait):
            continue
        if waiting.filter(pk=pk, sent_at=sent_at, resends=resends).update(sent_at=now, resends=F("resends") + 1):
            due.append(pk)
            logger.info("%s %d sent again (waiting since %s, %d sends before)", what, pk, queued_at, resends + 1)
    return due


def release_connection() -> None:
    """Give this thread's database connection back (to the pool) before long network I/O.

    A connection held through a download dies with a database restarted meanwhile, and the write that
    finishes the job would fail on it; the next query takes a fresh (pool-checked) one instead. Inside a
    transaction (a test's) the connection stays.
    """
    if not connection.in_atomic_block:
        connection.close()


@contextmanager
def heartbeat(
    beat: Callable[[], bool], *, every: float, give_back: Callable[[], bool] | None = None
) -> Iterator[threading.Event]:
    """Call `beat` every `every` seconds from a thread while the block runs.

    `beat` updates the row by primary key and claim id and says whether it still holds the claim. The
    event yielded is set once it does not (the reaper took the job from us), or once `give_back` put the
    job back in the queue because the worker is stopping: the block should stop without writing. A beat
    that fails on the database is skipped. Each beat gives its connection back (to the pool) at once: the
    next one takes a fresh one (a restarted database breaks every open connection), and many jobs beating
    hold no connections between beats. A thread keeps beating through blocking calls (a slow read, an
    upload), which a check inside a loop would not.
    """
    lost = threading.Event()
    done = threading.Event()  # the block ended
    wake = threading.Event()  # the block ended, or the worker is stopping

    def run() -> None:
        try:
            while not done.is_set():
                wake.wait(every)
                if done.is_set():
                    return
                if give_back is not None and is_stopping():
                    hand_back(give_back)
                    return
                try:
                    if not beat():
                        lost.set()
                        return
                except DatabaseError as exc:
                    logger.warning("heartbeat skipped: %s", type(exc).__name__)
                finally:
                    connections.close_all()  # this thread's connections only
        finally:
            connections.close_all()  # this thread's connections only

    def hand_back(give_back: Callable[[], bool]) -> None:
        try:
            give_back()
        except DatabaseError as exc:  # the reaper re-queues it once its heartbeat is stale
            logger.warning("job not given back: %s", type(exc).__name__)
        lost.set()

    _beating.add(wake)
    if _stopping.is_set():
        wake.set()
    thread = threading.Thread(target=run, name="job-heartbeat", daemon=True)
    thread.start()
    try:
        yield lost
    finally:
        _beating.discard(wake)
        done.set()
        wake.set()
        thread.join()


def is_worker_stopping() -> bool:
    """Whether this process's worker is stopping (`jobs_stop` here, or in the worker this is a pool process of)."""
    return is_stopping()


@contextmanager
def outage_logged(what: str, *, then: str) -> Iterator[None]:
    """Around a task's body: the database or Redis down is one WARNING line (`what`: store unreachable
    (cause); `then`), no traceback, and the task ends; anything else propagates.

    An outage is expected, `/health` names it, and the job's row tells the reaper what to do once the
    store is back; Celery would otherwise log an ERROR with a traceback for every task meanwhile.
    """
    try:
        yield
    except Exception as exc:
        store = outage_of(exc)
        if store is None:
            raise
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        logger.warning("%s: %s unreachable (%s); %s", what, store, lines[0][:200], then)
