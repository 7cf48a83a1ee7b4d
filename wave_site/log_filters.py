"""Logging filters: keep ERROR, and tracebacks, for what an operator must look at.

An outage of the database or Redis (cache and broker) is expected: `/health` names it, the web answers
503 and logs one line per request (wave_site.errors), jobs are left to their reaper. `OutageFilter`, on
the console handler of every process (web, workers, beat), turns whatever else reports one (Celery's
"task raised", beat's failed send, the worker's reconnection attempts) into one WARNING line without a
traceback. Django's `django.request` logger reports every 5xx answer at ERROR: `ExpectedRefusalFilter`
lowers the deliberate ones (501 not offered, 502-504 an upstream or a store unavailable, layers still
downloading) to WARNING. Unexpected errors are still logged at ERROR, with their error ID, by
`wave_site.errors`.
"""

from __future__ import annotations

import logging
from typing import Any

# 500 is the only server error this service answers by accident; the others are answers it chose.
EXPECTED_SERVER_STATUSES = frozenset({501, 502, 503, 504})
CANCEL_ON_CONNECTION_LOSS = "worker_cancel_long_running_tasks_on_connection_loss"
BEAT_SEND_FAILED = "Scheduler: could not send a periodic task, the broker is unavailable (%s); retrying later"


class ExpectedRefusalFilter(logging.Filter):
    """Lower `django.request` records of deliberate 5xx answers (501-504) from ERROR to WARNING."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and getattr(record, "status_code", None) in EXPECTED_SERVER_STATUSES:
            _as_warning(record)
        return True


class OutageFilter(logging.Filter):
    """Any record caused by the database or Redis being unreachable, as one WARNING line, no traceback.

    - a record whose exception, or any exception it was raised from or during, is an outage (Celery's
      "Task ... raised unexpected", beat's "Message Error" when it cannot send a periodic task);
    - the worker's "consumer: Cannot connect to <broker>: ... Trying again in N seconds" (three lines).
    The deprecation warning Celery adds to every lost broker connection (that a future version will cancel
    running tasks then: ours are durable jobs either way) is dropped. Everything else passes unchanged.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "py.warnings" and CANCEL_ON_CONNECTION_LOSS in str(record.args or record.msg):
            return False
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None:
            store = _outage_in_chain(exc, is_broker_only=record.name == "celery.beat")
            if store is not None:
                _rewrite(record, *_one_line(record, store, _cause(exc)))
        elif record.levelno >= logging.ERROR and _is_broker_retry(record):
            uri, error, next_step = record.args  # type: ignore[misc]
            if isinstance(error, BaseException) and _outage_in_chain(error, is_broker_only=True) is not None:
                message = "consumer: Cannot connect to %s: %s; %s"
                _rewrite(record, message, (uri, _cause(error), " ".join(str(next_step).split())))
        return True


def _one_line(record: logging.LogRecord, store: str, cause: str) -> tuple[str, tuple[Any, ...]]:
    if record.name == "celery.beat":
        return BEAT_SEND_FAILED, (cause,)
    task = getattr(record, "data", None)
    if isinstance(task, dict) and "name" in task and "id" in task:  # celery.app.trace's context
        return "Task %s[%s] failed: %s unreachable (%s)", (task["name"], task["id"], store, cause)
    first = (record.getMessage().strip().splitlines() or [""])[0][:300]
    return "%s: %s unreachable (%s)", (first, store, cause)


def _rewrite(record: logging.LogRecord, message: str, args: tuple[Any, ...]) -> None:
    record.msg, record.args = message, args
    record.exc_info, record.exc_text, record.stack_info = None, None, None
    _as_warning(record)


def _as_warning(record: logging.LogRecord) -> None:
    record.levelno = logging.WARNING
    record.levelname = logging.getLevelName(logging.WARNING)


def _cause(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__


def _outage_in_chain(exc: BaseException, *, is_broker_only: bool) -> str | None:
    """The store that `exc`, or an exception it was raised from or while handling, says is unreachable.

    `is_broker_only`: the record comes from a part that talks to the broker alone, so that a plain
    connection error (a refused socket) means the broker too.
    """
    from wave_site.errors import outage_of

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        store = outage_of(current)
        if store is not None:
            return store
        if is_broker_only and isinstance(current, ConnectionError | TimeoutError):
            return "broker"
        current = current.__cause__ or current.__context__
    return None


def _is_broker_retry(record: logging.LogRecord) -> bool:
    from celery.worker.consumer import consumer

    template = getattr(consumer, "CONNECTION_ERROR", None)  # not in celery-types' stubs
    return record.msg == template and isinstance(record.args, tuple) and len(record.args) == 3
