"""Helpers for durable jobs (ARCHITECTURE.md "Durable jobs"): claim ids, and heartbeats while a claim is held.

A job is a row claimed by its task with a compare-and-set that writes a claim id; while the task
works, a heartbeat thread proves the claim alive; a reaper re-queues rows whose heartbeat went stale.
Layer downloads use these (requests_app.downloads); builds reuse them.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from django.db import DatabaseError, connection, connections

logger = logging.getLogger(__name__)


def new_claim_id() -> str:
    """`host:pid:nonce`: unique per attempt, and tells an operator which process holds it."""
    return f"{socket.gethostname()[:100]}:{os.getpid()}:{secrets.token_hex(4)}"


def release_connection() -> None:
    """Give this thread's database connection back (to the pool) before long network I/O.

    A connection held through a download dies with a database restarted meanwhile, and the write that
    finishes the job would fail on it; the next query takes a fresh (pool-checked) one instead. Inside a
    transaction (a test's) the connection stays.
    """
    if not connection.in_atomic_block:
        connection.close()


@contextmanager
def heartbeat(beat: Callable[[], bool], *, every: float) -> Iterator[threading.Event]:
    """Call `beat` every `every` seconds from a thread while the block runs.

    `beat` updates the row by primary key and claim id and says whether it still holds the claim. The
    event yielded is set once it does not (the reaper took the job from us): the block should stop
    without writing. A beat that fails on the database is skipped and its connection dropped, so that the
    next one connects again (a restarted database breaks every open connection). A thread keeps beating
    through blocking calls (a slow read, an upload), which a check inside a loop would not.
    """
    lost = threading.Event()
    stop = threading.Event()

    def run() -> None:
        try:
            while not stop.wait(every):
                try:
                    if not beat():
                        lost.set()
                        return
                except DatabaseError as exc:
                    logger.warning("heartbeat skipped: %s", type(exc).__name__)
                    connections.close_all()  # this thread's connections only
        finally:
            connections.close_all()  # this thread's connections only

    thread = threading.Thread(target=run, name="job-heartbeat", daemon=True)
    thread.start()
    try:
        yield lost
    finally:
        stop.set()
        thread.join()
