"""Logging filters: keep ERROR for what an operator must look at.

Django's `django.request` logger reports every 5xx answer at ERROR. A 501 is a deliberate answer (a
feature this service does not offer), not a failure: it is reported at WARNING like the 4xx refusals.
Unexpected errors are still logged at ERROR, with their error ID, by `wave_site.errors`.
"""

from __future__ import annotations

import logging

EXPECTED_SERVER_STATUSES = frozenset({501})


class ExpectedRefusalFilter(logging.Filter):
    """Lower `django.request` records of expected refusals (501) from ERROR to WARNING."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and getattr(record, "status_code", None) in EXPECTED_SERVER_STATUSES:
            record.levelno = logging.WARNING
            record.levelname = logging.getLevelName(logging.WARNING)
        return True


class BrokerOutageFilter(logging.Filter):
    """Celery beat's "could not send a periodic task" record, while the broker is down, as one WARNING line.

    Beat logs each failed send at ERROR with a stack and a traceback, every reap interval for as long as
    the outage lasts. The outage is expected and `/health` names it; beat sends again at the next interval.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and _is_broker_outage(exc):
            record.msg = "Scheduler: could not send a periodic task, the broker is unavailable (%s); retrying later"
            record.args = (str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__,)
            record.exc_info = None
            record.exc_text = None
            record.levelno = logging.WARNING
            record.levelname = logging.getLevelName(logging.WARNING)
        return True


def _is_broker_outage(exc: BaseException) -> bool:
    from kombu.exceptions import OperationalError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    current: BaseException | None = exc
    while current is not None:
        if isinstance(current, OperationalError | RedisConnectionError | RedisTimeoutError | ConnectionError):
            return True
        current = current.__cause__ or current.__context__
    return False
