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
