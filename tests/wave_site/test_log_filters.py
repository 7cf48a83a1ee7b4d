"""Logging filters: an outage of the database or Redis is one WARNING line per event, without a traceback, in
the web, the workers and beat; deliberate 5xx answers are warnings; other errors keep their traceback."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from celery import Celery
from celery.beat import ScheduleEntry, Scheduler
from celery.worker.consumer import consumer
from django.db import OperationalError as DatabaseOperationalError
from django.test import Client
from kombu.exceptions import OperationalError
from pytest_django.fixtures import Settings

from tests.conftest import PushedImage
from tests.support.http_files import FileServer
from tests.support.layers import make_layer
from tests.support.network import wait_until
from tests.support.servers import PrivatePostgres, PrivateRedis, WebProcess, start_private_postgres, start_private_redis
from tests.support.service import REPO
from tests.support.worker import Worker, start_worker
from wave_site.celery import app
from wave_site.log_filters import OutageFilter

REFUSED = "Error 111 connecting to 127.0.0.1:9. Connection refused."


def records_of(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == name and record.levelno >= logging.WARNING]


def test_every_process_logs_through_the_outage_filter() -> None:
    """The console handler of the settings' LOGGING (web, workers, beat) filters every record."""
    console = [handler for handler in logging.getLogger().handlers if isinstance(handler, logging.StreamHandler)]
    assert [type(f) for handler in console for f in handler.filters] == [OutageFilter]


def failing_scheduler(broker_url: str) -> tuple[Scheduler, ScheduleEntry]:
    """Beat's real scheduler on an app whose broker is `broker_url`."""
    beat_app = Celery("beat-test", set_as_current=False)
    beat_app.config_from_object("django.conf:settings", namespace="CELERY")
    beat_app.conf.broker_url = broker_url
    scheduler = Scheduler(beat_app, lazy=True)
    return scheduler, ScheduleEntry(name="reap-layer-downloads", task="requests_app.layer_download_reap", app=beat_app)


def test_beat_failing_to_send_on_a_broker_outage_is_one_warning_line(caplog: pytest.LogCaptureFixture) -> None:
    """Beat wraps the broker's error in its SchedulingError: the filter finds the outage in the chain."""
    scheduler, entry = failing_scheduler("redis://127.0.0.1:9/0")
    with caplog.at_level(logging.INFO, logger="celery.beat"):
        scheduler.apply_entry(entry)
    failures = records_of(caplog, "celery.beat")
    assert [(r.levelname, r.exc_info, r.getMessage()) for r in failures] == [(
        "WARNING", None, "Scheduler: could not send a periodic task, the broker is unavailable "
        f"(Couldn't apply scheduled task reap-layer-downloads: {REFUSED}); retrying later",
    )]  # fmt: skip
    assert "Traceback" not in caplog.text
    scheduler.app.close()


def test_other_beat_errors_keep_their_traceback(caplog: pytest.LogCaptureFixture) -> None:
    scheduler = Scheduler(app, lazy=True)

    def apply_async(*args: object, **kwargs: object) -> None:
        raise ValueError("a bug")

    scheduler.apply_async = apply_async  # type: ignore[method-assign]
    entry = ScheduleEntry(name="reap-layer-downloads", task="requests_app.layer_download_reap", app=app)
    with caplog.at_level(logging.INFO, logger="celery.beat"):
        scheduler.apply_entry(entry)
    failures = records_of(caplog, "celery.beat")
    assert [r.levelname for r in failures] == ["ERROR"]
    assert failures[0].exc_info is not None


probe = Celery("probe", set_as_current=False)  # the service's app stays the current one for shared tasks


@probe.task(name="probe.database_down")
def database_down() -> None:
    raise DatabaseOperationalError("connection failed: Connection refused\n\tIs the server running on that host?")


@probe.task(name="probe.bug")
def bug() -> None:
    raise ValueError("a bug")


def test_a_task_failing_on_an_outage_is_one_warning_line_and_a_bug_keeps_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Celery's own "Task raised unexpected" record, for any task (builds' too) that lets an outage through."""
    with caplog.at_level(logging.INFO, logger="celery.app.trace"):
        outage = database_down.apply(task_id="t-1")
        failure = bug.apply(task_id="t-2")
    assert (outage.state, failure.state) == ("FAILURE", "FAILURE")
    records = records_of(caplog, "celery.app.trace")
    assert [(r.levelname, r.getMessage(), r.exc_info is None) for r in records] == [
        ("WARNING", "Task probe.database_down[t-1] failed: database unreachable (connection failed: Connection "
         "refused)", True),
        ("ERROR", "Task probe.bug[t-2] raised unexpected: ValueError('a bug')", False),
    ]  # fmt: skip


def test_the_workers_reconnection_attempts_are_one_warning_line_each(caplog: pytest.LogCaptureFixture) -> None:
    exc = OperationalError(REFUSED)
    with caplog.at_level(logging.INFO, logger="celery.worker.consumer.consumer"):
        consumer.error(
            consumer.CONNECTION_ERROR, "redis://127.0.0.1:9/0", exc, "Trying again in 2.00 seconds... (1/None)"
        )
        consumer.error(consumer.CONNECTION_ERROR, "redis://127.0.0.1:9/0", ValueError("x"), "Trying again")
    records = records_of(caplog, "celery.worker.consumer.consumer")
    assert [(r.levelname, r.getMessage()) for r in records] == [
        ("WARNING", f"consumer: Cannot connect to redis://127.0.0.1:9/0: {REFUSED}; Trying again in 2.00 seconds... "
         "(1/None)"),
        ("ERROR", "consumer: Cannot connect to redis://127.0.0.1:9/0: x.\nTrying again\n"),
    ]  # fmt: skip


def test_celerys_deprecation_warning_on_a_lost_connection_is_dropped() -> None:
    seen: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = seen.append  # type: ignore[method-assign]
    handler.addFilter(OutageFilter())
    warning = logging.getLogger("py.warnings").makeRecord(
        "py.warnings", logging.WARNING, __file__, 1, "%s",
        ("consumer.py:499: CPendingDeprecationWarning: \nIn Celery 5.1 we introduced an optional breaking change "
         "... worker_cancel_long_running_tasks_on_connection_loss setting.",), None,
    )  # fmt: skip
    other = logging.getLogger("py.warnings").makeRecord(
        "py.warnings", logging.WARNING, __file__, 1, "%s", ("x.py:1: UserWarning: another",), None
    )
    handler.handle(warning)
    handler.handle(other)
    assert seen == [other]


@pytest.mark.django_db
def test_layers_still_downloading_is_a_warning_not_an_error(
    client: Client, anonymous_image: PushedImage, file_server: FileServer, settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """The 503 a pull gets while its layers download is an answer (the client retries), not a failure."""
    settings.WAVE_LAYER_WAIT_SECONDS = 0
    layer = make_layer({"pending.txt": b"pending\n"})
    layers = [layer.as_request(location=f"{file_server.url}/pending.tar.gz")]
    body = {"containerImage": anonymous_image.reference, "containerConfig": {"layers": layers}}
    created = client.post("/container-token", data=json.dumps(body), content_type="application/json")
    assert created.status_code == 200, created.content  # its download is never sent (no commit in this test)
    path = f"/v2/wt/{created.json()['containerToken']}/library/busybox/manifests/latest"
    with caplog.at_level(logging.INFO, logger="django.request"):
        pulled = client.get(path)
    assert pulled.status_code == 503
    assert pulled.json()["errors"][0]["message"] == "Container layers are still downloading, retry later"
    records = [r for r in caplog.records if r.name == "django.request"]
    assert [(r.levelname, r.status_code) for r in records] == [("WARNING", 503)]  # type: ignore[attr-defined]


# --- Real processes ---------------------------------------------------------------------------------------


class SilentLayerServer:
    """A layer server that answers nothing for `seconds`: a download in flight (heartbeats, an unacked task)."""

    def __init__(self, seconds: float) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                return

            def do_GET(self) -> None:
                time.sleep(seconds)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


QUEUE_DOWNLOAD = """
import os
from django.db import transaction
from requests_app.downloads import layer_download_create_or_join
with transaction.atomic():
    layer_download_create_or_join(url=os.environ["LAYER_URL"], gzip_size=10, gzip_digest="sha256:" + "1" * 64,
                                  tar_digest="sha256:" + "2" * 64, is_blob_stored=False, client="ip:192.0.2.5")
"""
FAST = {"WAVE_LAYER_DOWNLOAD_HEARTBEAT": "1", "WAVE_LAYER_DOWNLOAD_STALE_AFTER": "5", "WAVE_LAYER_REAP_INTERVAL": "1",
        "WAVE_LAYER_DOWNLOAD_RATE_WINDOW": "60", "WAVE_SSRF_ALLOW": "127.0.0.1"}  # fmt: skip
# A line of our log format: everything a process writes during an outage must be one of these.
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING) [\w.]+: .+$")


@contextmanager
def stack(tmp_path: Path) -> Iterator[tuple[PrivatePostgres, PrivateRedis, WebProcess, Worker, Worker]]:
    """Private Postgres and Redis; the web, the process worker with beat (the reaper every second) and the
    downloads worker (threads), as `manage.py run` starts them."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with start_private_postgres() as postgres, start_private_redis() as redis:
        database_url = postgres.create_database("wave")
        env = {**FAST, "DATABASE_URL": database_url, "REDIS_URL": redis.url}
        web = WebProcess(data_dir=data_dir, env=env)
        web.migrate()
        with web.start():
            worker = start_worker(
                database_url=database_url, redis_url=redis.url, data_dir=data_dir, ssrf_allow="127.0.0.1",
                pool="prefork", concurrency=2, queues="builds,default", beat=True, env=FAST,
            )  # fmt: skip
            downloads = start_worker(
                database_url=database_url, redis_url=redis.url, data_dir=data_dir, ssrf_allow="127.0.0.1",
                pool="threads", concurrency=4, queues="layers", env=FAST,
            )  # fmt: skip
            try:
                yield postgres, redis, web, worker, downloads
            finally:
                worker.kill()  # its download waits on a silent server: a warm shutdown would wait for it
                downloads.kill()


@pytest.mark.slow
def test_postgres_then_redis_down_is_one_warning_line_per_event_in_every_process(tmp_path: Path) -> None:
    """A download in flight, the reaper every second, pulls meanwhile: Postgres, then Redis, killed for 6 s.
    Every line the web, the workers and beat write meanwhile is one line of our format, none ERROR, no
    traceback; both workers come back by themselves (the downloads worker used to stop for good when Redis
    went away while it had a free thread and a task in flight)."""
    layer_server = SilentLayerServer(seconds=30)
    try:
        with stack(tmp_path) as (postgres, redis, web, worker, downloads):
            env = {**web.env, "LAYER_URL": f"{layer_server.url}/x.tgz"}
            subprocess.run([sys.executable, "manage.py", "shell", "-c", QUEUE_DOWNLOAD], cwd=REPO, env=env,
                           check=True, capture_output=True, timeout=60)  # fmt: skip
            wait_until(lambda: "Task requests_app.layer_download[" in downloads.output(), timeout=20,
                       what="the download to start")  # fmt: skip
            time.sleep(1.5)  # a heartbeat or two
            outputs = (web.log, worker.output, downloads.output)
            before = [len(output()) for output in outputs]
            stores: tuple[PrivatePostgres | PrivateRedis, ...] = (postgres, redis)
            for store in stores:
                store.kill()
                for _ in range(6):
                    answer = httpx.get(f"{web.url}/v2/wt/abcdefabcdef/library/busybox/manifests/latest", timeout=10)
                    assert answer.status_code == 503
                    time.sleep(1)
                store.start()
                time.sleep(4)
            wait_until(lambda: downloads.output().count("Connected to redis://") >= 2, timeout=30,
                       what="the downloads worker to reconnect")  # fmt: skip
            assert worker.process.poll() is None
            assert downloads.process.poll() is None
            during = {name: output()[start:] for name, output, start in
                      zip(("web", "worker", "downloads"), outputs, before, strict=True)}  # fmt: skip
    finally:
        layer_server.close()

    for name, text in during.items():
        odd = [line for line in text.splitlines() if line.strip() and not LOG_LINE.match(line)]
        assert odd == [], f"{name}:\n" + "\n".join(odd[:20])
    assert (
        "database unreachable: GET /v2/wt/abcdefabcdef/library/busybox/manifests/latest answered 503" in during["web"]
    )
    assert "redis unreachable: GET /v2/wt/abcdefabcdef/library/busybox/manifests/latest answered 503" in during["web"]
    assert "WARNING wave_site.jobs: layer download reaper skipped: database unreachable (" in during["worker"]
    assert (
        "WARNING celery.beat: Scheduler: could not send a periodic task, the broker is unavailable ("
        in (during["worker"])
    )
    assert "WARNING wave_site.jobs: heartbeat skipped: OperationalError" in during["downloads"]
    for name in ("worker", "downloads"):
        assert "WARNING celery.worker.consumer.consumer: consumer: Cannot connect to redis://" in during[name], name
        assert "INFO celery.worker.consumer.connection: Connected to redis://" in during[name], name
