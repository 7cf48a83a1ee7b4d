"""Logging filters: beat's failed sends during a broker outage are one WARNING line, other errors unchanged."""

from __future__ import annotations

import logging

import pytest
from celery.beat import ScheduleEntry, Scheduler
from kombu.exceptions import OperationalError

from wave_site.celery import app


def _failing_scheduler(exc: Exception) -> tuple[Scheduler, ScheduleEntry]:
    scheduler = Scheduler(app, lazy=True)

    def apply_async(*args: object, **kwargs: object) -> None:
        raise exc

    scheduler.apply_async = apply_async  # type: ignore[method-assign]
    entry = ScheduleEntry(name="reap-layer-downloads", task="requests_app.layer_download_reap", app=app)
    return scheduler, entry


def test_beat_send_failing_on_a_broker_outage_is_one_warning_line(caplog: pytest.LogCaptureFixture) -> None:
    scheduler, entry = _failing_scheduler(
        OperationalError("Error 111 connecting to 127.0.0.1:6399. Connection refused.")
    )
    with caplog.at_level(logging.INFO, logger="celery.beat"):
        scheduler.apply_entry(entry)
    failures = [r for r in caplog.records if r.name == "celery.beat" and r.levelno >= logging.WARNING]
    assert len(failures) == 1
    record = failures[0]
    assert record.levelname == "WARNING"
    assert record.exc_info is None
    assert record.getMessage() == (
        "Scheduler: could not send a periodic task, the broker is unavailable "
        "(Error 111 connecting to 127.0.0.1:6399. Connection refused.); retrying later"
    )
    assert "Traceback" not in caplog.text


def test_other_beat_errors_keep_their_traceback(caplog: pytest.LogCaptureFixture) -> None:
    scheduler, entry = _failing_scheduler(ValueError("a bug"))
    with caplog.at_level(logging.INFO, logger="celery.beat"):
        scheduler.apply_entry(entry)
    failures = [r for r in caplog.records if r.name == "celery.beat" and r.levelno >= logging.WARNING]
    assert len(failures) == 1
    assert failures[0].levelname == "ERROR"
    assert failures[0].exc_info is not None


def test_worker_retries_the_broker_forever() -> None:
    assert app.conf.broker_connection_max_retries is None
