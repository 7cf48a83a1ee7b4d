"""Request ids: answered in `X-Request-Id`, written on every log record, carried into the Celery tasks a request
enqueues (a real worker logs under it), and WAVE_LOG_FORMAT=json's one JSON object per line."""

from __future__ import annotations

import json
import logging
import re
import sys

import pytest
from django.conf import settings
from django.test import Client
from django_redis import get_redis_connection  # type: ignore[import-untyped]

from builds.tasks import build_reap_task
from tests.support.network import wait_until
from tests.support.worker import start_worker
from wave_site import request_id as request_ids

QUEUE = "wave-test-request-id"  # no other worker consumes it


def test_each_answer_carries_its_request_id(client: Client) -> None:
    first = client.get("/service-info")["X-Request-Id"]
    second = client.get("/service-info")["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{32}", first)
    assert first != second
    assert client.get("/service-info", HTTP_X_REQUEST_ID="trace-0123456789")["X-Request-Id"] == "trace-0123456789"
    for hostile in ("short", "a b c d e f g h", "x" * 65, 'trace"},{"level":"ERROR'):
        kept = client.get("/service-info", HTTP_X_REQUEST_ID=hostile)["X-Request-Id"]
        assert re.fullmatch(r"[0-9a-f]{32}", kept)


def test_json_lines_carry_the_request_id() -> None:
    formatter = request_ids.JsonFormatter()
    record = logging.LogRecord("wave.test", logging.WARNING, __file__, 1, 'layer "%s"\nfailed', ("a",), None)
    token = request_ids._current.set("trace-0123456789")
    try:
        line = formatter.format(record)
    finally:
        request_ids._current.reset(token)
    assert "\n" not in line
    entry = json.loads(line)
    assert (entry["level"], entry["logger"], entry["message"], entry["request_id"]) == (
        "WARNING", "wave.test", 'layer "a"\nfailed', "trace-0123456789",
    )  # fmt: skip
    assert entry["time"].endswith("+00:00")
    try:
        raise ValueError("boom")
    except ValueError:
        failed = logging.LogRecord("wave.test", logging.ERROR, __file__, 1, "oops", (), sys.exc_info())
    entry = json.loads(formatter.format(failed))
    assert "request_id" not in entry  # outside a request
    assert "ValueError: boom" in entry["exception"]


def test_a_task_runs_under_the_id_of_the_request_that_sent_it(
    django_db_setup: None, tmp_path_factory: pytest.TempPathFactory
) -> None:
    worker = start_worker(
        database_url=_database_url(),
        redis_url=settings.REDIS_URL,
        data_dir=tmp_path_factory.mktemp("request-id-worker"),
        ssrf_allow="",
        queues=QUEUE,
        env={"WAVE_LOG_FORMAT": "json"},
    )
    try:
        token = request_ids._current.set("trace-0123456789")
        try:
            sent = build_reap_task.apply_async(queue=QUEUE, retry=False).id
        finally:
            request_ids._current.reset(token)
        outside = build_reap_task.apply_async(queue=QUEUE, retry=False).id  # beat's way: no request

        def entries() -> list[dict[str, object]]:
            lines = worker.output().splitlines()
            return [json.loads(line) for line in lines if line.startswith("{")]

        def done(task_id: str) -> bool:
            return any(task_id in str(e["message"]) and "succeeded" in str(e["message"]) for e in entries())

        wait_until(lambda: done(sent) and done(outside), timeout=60, what="both tasks")
        succeeded = {e.get("request_id") for e in entries() if "succeeded" in str(e["message"])}
        assert succeeded == {"trace-0123456789", None}
        [ours] = [e for e in entries() if sent in str(e["message"]) and "succeeded" in str(e["message"])]
        assert ours["request_id"] == "trace-0123456789"
        [theirs] = [e for e in entries() if outside in str(e["message"]) and "succeeded" in str(e["message"])]
        assert "request_id" not in theirs
    finally:
        worker.stop()
        get_redis_connection("default").delete(QUEUE)


def _database_url() -> str:
    from django.db import connection

    database = connection.settings_dict
    user, password, host, port = database["USER"], database["PASSWORD"], database["HOST"], database["PORT"]
    return f"postgres://{user}:{password}@{host}:{port}/{database['NAME']}"
