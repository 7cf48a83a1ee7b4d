from __future__ import annotations

from django.conf import settings

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
