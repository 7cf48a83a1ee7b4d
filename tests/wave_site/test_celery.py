from __future__ import annotations

import os
import signal
import time

import pytest
import redis
from celery import Celery
from django.conf import settings
from kombu.exceptions import OperationalError

from tests.support.servers import start_private_redis
from wave_site.celery import QUEUES, app


def test_celery_speaks_json_only_and_keeps_no_results() -> None:
    assert app.conf.task_serializer == "json"
    assert app.conf.accept_content == ["json"]
    assert app.conf.task_ignore_result is True
    assert app.conf.result_backend is None


def test_celery_takes_one_task_at_a_time_and_acks_late() -> None:
    assert app.conf.worker_prefetch_multiplier == 1
    assert app.conf.task_acks_late is True
    assert app.conf.task_reject_on_worker_lost is True


def test_celery_queues_and_routes() -> None:
    assert QUEUES == ("builds", "layers", "default")
    assert [q.name for q in app.conf.task_queues] == ["builds", "layers", "default"]
    assert app.conf.task_default_queue == "default"
    assert app.conf.task_routes["builds.*"] == {"queue": "builds"}
    assert app.conf.task_routes["requests_app.layer_*"] == {"queue": "layers"}


def test_celery_time_limits_cover_the_build_timeout() -> None:
    assert app.conf.task_soft_time_limit == settings.WAVE_BUILD_TIMEOUT + 30
    assert app.conf.task_time_limit > app.conf.task_soft_time_limit


def test_celery_uses_redis_when_configured() -> None:
    assert app.conf.broker_url == settings.REDIS_URL
    assert settings.REDIS_URL.startswith("redis://")
    assert app.conf.beat_schedule["purge-expired-container-requests"]["task"] == "requests_app.container_request_purge"


@pytest.mark.parametrize("how", ["stop", "hang"])
def test_publishing_to_a_broker_that_is_down_or_hung_fails_within_seconds(how: str) -> None:
    """An enqueue on the request path gives up quickly (the caller leaves its row queued for the reaper)."""
    publisher = Celery("publish-test", set_as_current=False)
    publisher.config_from_object("django.conf:settings", namespace="CELERY")
    with start_private_redis() as broker:
        publisher.conf.broker_url = broker.url
        publisher.send_task("requests_app.layer_download", args=[1])  # a pooled connection, as in a web process
        assert broker.process is not None
        if how == "stop":
            broker.stop()
        else:
            os.kill(broker.process.pid, signal.SIGSTOP)  # accepts connections, answers nothing
        try:
            started = time.monotonic()
            with pytest.raises(OperationalError):
                publisher.send_task("requests_app.layer_download", args=[1])
            assert time.monotonic() - started < 3.5  # before the fix: forever when hung
        finally:
            if how == "hang":
                os.kill(broker.process.pid, signal.SIGCONT)
        broker.start()  # a new, empty Redis after a stop; the same one, resumed, after a hang
        queue = redis.Redis.from_url(broker.url)
        before = queue.llen("layers")  # after a hang, the timed-out message may still have landed
        publisher.send_task("requests_app.layer_download", args=[1])  # the publisher reconnects by itself
        assert queue.llen("layers") == before + 1
        queue.close()
    publisher.close()
