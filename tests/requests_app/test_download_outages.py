"""Redis or Postgres SIGKILLed while layer downloads are in flight, and the whole embedded service killed:
once the store (or the service) is back, every accepted layer ends READY (or FAILED with a reason) within
the download timeout + 60 s, and no accepted request is lost.

Redis mode runs on a private Postgres cluster and a private Redis (tests/support/servers.py), with a real
web process (uvicorn) and a real Celery worker running beat (the reaper), all with small thresholds so
that each test stays well under a minute. Redis runs without persistence: a kill loses every queued
message, which the reaper sends again from the rows. Embedded mode is `manage.py run` (SQLite and the
filesystem broker), every one of its processes killed at once and started again.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.conftest import PushedImage
from tests.support.http_files import FileServer
from tests.support.layers import Layer, make_layer
from tests.support.network import wait_until
from tests.support.servers import (
    PrivatePostgres,
    PrivateRedis,
    WebProcess,
    start_private_postgres,
    start_private_redis,
)
from tests.support.service import start_service
from tests.support.worker import Worker, start_worker

pytestmark = pytest.mark.slow

DOWNLOAD_TIMEOUT = 20
FAST_RECOVERY = {
    "WAVE_LAYER_DOWNLOAD_HEARTBEAT": "1",
    "WAVE_LAYER_DOWNLOAD_STALE_AFTER": "5",
    "WAVE_LAYER_REAP_INTERVAL": "1",
    "WAVE_LAYER_DOWNLOAD_TIMEOUT": str(DOWNLOAD_TIMEOUT),
    "WAVE_SSRF_ALLOW": "127.0.0.1",
}
SETTLE_SECONDS = DOWNLOAD_TIMEOUT + 60  # the bound of issue 10, counted from the moment the store is back
LAYERS = """
SELECT r.token, l.position, l.state, l.failure_reason, d.url, d.state, d.attempts
FROM requests_app_injectedlayer l
JOIN requests_app_containerrequest r ON r.id = l.request_id
JOIN requests_app_layerdownload d ON d.id = l.download_id
ORDER BY r.id, l.position
"""
BEATING = "SELECT id FROM requests_app_layerdownload WHERE state = 'running' AND heartbeat_at > started_at"
TOKENS = "SELECT token FROM requests_app_containerrequest ORDER BY id"
REQUESTS = [["one"], ["one", "two"], ["three"]]  # the second request joins the first one's download
Rows = list[tuple[object, ...]]


@dataclass
class Downloads:
    """Layers the file server answers after a pause (`/slow/`), and request bodies naming them."""

    image: PushedImage
    file_server: FileServer
    layers: dict[str, Layer]

    def path(self, name: str) -> str:
        return f"/slow/{name}.tar.gz"

    def url(self, name: str) -> str:
        return f"{self.file_server.url}{self.path(name)}"

    def body(self, *names: str) -> dict[str, object]:
        layers = [self.layers[name].as_request(location=self.url(name)) for name in names]
        return {"containerImage": self.image.reference, "containerConfig": {"layers": layers}}

    def ready(self, tokens: list[str], requests: list[list[str]], attempts: dict[str, int] | None = None) -> Rows:
        """The rows of LAYERS once every layer of these requests is READY, each download claimed once
        (or as `attempts` says)."""
        return [
            (token, position, "ready", "", self.url(name), "ready", (attempts or {}).get(name, 1))
            for token, names in zip(tokens, requests, strict=True)
            for position, name in enumerate(names)
        ]

    def fetches(self) -> dict[str, int]:
        return {name: self.file_server.hits.count(self.path(name)) for name in self.layers}


@pytest.fixture
def downloads(anonymous_image: PushedImage, file_server: FileServer) -> Downloads:
    layers = {name: make_layer({f"{name}.txt": f"{name}\n".encode()}) for name in ("one", "two", "three", "late")}
    file_server.files.update({f"{name}.tar.gz": layer.gzip_bytes for name, layer in layers.items()})
    return Downloads(anonymous_image, file_server, layers)


@dataclass
class Stack:
    """Redis mode on private stores: a web process and a worker with beat, sharing one data dir."""

    postgres: PrivatePostgres
    redis: PrivateRedis
    database_url: str
    web: WebProcess
    worker: Worker

    def post(self, body: dict[str, object]) -> httpx.Response:
        return httpx.post(f"{self.web.url}/container-token", json=body, timeout=30)

    def accept(self, body: dict[str, object]) -> str:
        response = self.post(body)
        assert response.status_code == 200, response.text
        return str(response.json()["containerToken"])

    def query(self, sql: str) -> Rows:
        with psycopg.connect(self.database_url, connect_timeout=2) as connection:
            return list(connection.execute(sql).fetchall())

    def logs(self) -> str:
        return f"--- web\n{self.web.log()[-3000:]}\n--- worker\n{self.worker.output()[-6000:]}"


@contextmanager
def redis_mode(tmp_path: Path, *, concurrency: int, **env: str) -> Iterator[Stack]:
    """Private Postgres and Redis, the web on them and a worker with beat (`concurrency` pool processes: the
    reaper needs a free one); `env` overrides FAST_RECOVERY."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    settings = {**FAST_RECOVERY, **env}
    with start_private_postgres() as postgres, start_private_redis() as redis:
        database_url = postgres.create_database("wave")
        web = WebProcess(data_dir=data_dir, env={**settings, "DATABASE_URL": database_url, "REDIS_URL": redis.url})
        web.migrate()
        with web.start():
            worker = start_worker(
                database_url=database_url, redis_url=redis.url, data_dir=data_dir, ssrf_allow="127.0.0.1",
                pool="prefork", beat=True, concurrency=concurrency, env=settings,
            )  # fmt: skip
            try:
                yield Stack(postgres, redis, database_url, web, worker)
            finally:
                worker.stop()


def wait_for(condition: Callable[[], Rows], *, timeout: float, what: str) -> Rows:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def running(query: Callable[[str], Rows]) -> Callable[[], Rows]:
    return lambda: [row for row in query(LAYERS) if row[5] == "running"]


def settled(query: Callable[[str], Rows], count: int) -> Callable[[], Rows]:
    """The LAYERS rows once there are `count` and none is pending."""

    def rows() -> Rows:
        found = query(LAYERS)
        return found if len(found) == count and all(row[2] != "pending" for row in found) else []

    return rows


def test_redis_killed_mid_download_loses_no_request(
    tmp_path: Path, downloads: Downloads, file_server: FileServer
) -> None:
    file_server.slow_seconds = 4
    with redis_mode(tmp_path, concurrency=2) as stack:  # two downloads run, the third waits in Redis
        tokens = [stack.accept(downloads.body(*names)) for names in REQUESTS]
        wait_for(running(stack.query), timeout=30, what="a download to be claimed")
        time.sleep(1)  # inside the file server's pause: mid-download
        stack.redis.kill()  # no persistence: every queued message is gone
        try:
            during = stack.post(downloads.body("late"))
            stored_during = stack.query(TOKENS)
            time.sleep(3)
        finally:
            stack.redis.start()
        back = time.monotonic()

        rows = wait_for(settled(stack.query, 4), timeout=SETTLE_SECONDS, what="every layer to settle")
        assert time.monotonic() - back < SETTLE_SECONDS
        # Refused while Redis was down, and nothing of it stored: the client retries it.
        assert during.status_code == 503, during.text
        assert during.json() == {"message": "Service temporarily unavailable (redis unreachable), retry in 10 seconds"}
        assert stored_during == [(token,) for token in tokens]
        assert stack.query(TOKENS) == [(token,) for token in tokens]  # every accepted request is still there
        assert rows == downloads.ready(tokens, REQUESTS), stack.logs()
        assert downloads.fetches() == {"one": 1, "two": 1, "three": 1, "late": 0}

        # The web, the worker and its beat are connected again: a new request is served from start to end.
        late = stack.accept(downloads.body("late"))
        rows = wait_for(settled(stack.query, 5), timeout=SETTLE_SECONDS, what="the late layer to settle")
        assert rows == downloads.ready([*tokens, late], [*REQUESTS, ["late"]]), stack.logs()


def test_postgres_killed_mid_download_loses_no_request(
    tmp_path: Path, downloads: Downloads, file_server: FileServer
) -> None:
    # A restart shorter than the stale threshold costs the running downloads nothing: their heartbeats
    # resume and they finish on the restarted database, claimed once. Their answers come 16 s after their
    # requests, well past the moment their claims would go stale (10 s) if their heartbeats did not resume.
    file_server.slow_seconds = 16
    requests = REQUESTS[:2]
    # Two downloads run, and the reaper beside them (it would re-queue them if their heartbeats stopped).
    with redis_mode(tmp_path, concurrency=3, WAVE_LAYER_DOWNLOAD_STALE_AFTER="10") as stack:
        tokens = [stack.accept(downloads.body(*names)) for names in requests]
        # Killed once both downloads' heartbeats hold a connection of their own: the restart breaks them.
        wait_for(lambda: stack.query(BEATING)[1:], timeout=30, what="both downloads to beat")
        file_server.slow_seconds = 2  # for the downloads that follow
        stack.postgres.kill()
        killed = time.monotonic()
        try:
            during = stack.post(downloads.body("late"))
            time.sleep(max(0.0, killed + 2 - time.monotonic()))
        finally:
            stack.postgres.start()
        back = time.monotonic()

        rows = wait_for(settled(stack.query, 3), timeout=SETTLE_SECONDS, what="every layer to settle")
        assert time.monotonic() - back < SETTLE_SECONDS
        assert during.status_code == 503, during.text
        assert during.json() == {
            "message": "Service temporarily unavailable (database unreachable), retry in 10 seconds"
        }
        assert stack.query(TOKENS) == [(token,) for token in tokens]
        assert rows == downloads.ready(tokens, requests), stack.logs()
        assert downloads.fetches() == {"one": 1, "two": 1, "three": 0, "late": 0}

        # Every pooled connection of the web works again at once: no request pays for one the restart broke.
        late = [stack.accept(downloads.body("late")) for _ in range(3)]
        rows = wait_for(settled(stack.query, 6), timeout=SETTLE_SECONDS, what="the late layer to settle")
        assert rows == downloads.ready([*tokens, *late], [*requests, ["late"], ["late"], ["late"]]), stack.logs()


def test_whole_embedded_service_killed_mid_download_loses_no_request(
    tmp_path: Path, downloads: Downloads, file_server: FileServer
) -> None:
    file_server.slow_seconds = 4
    data_dir = tmp_path / "data"
    env = {**FAST_RECOVERY, "WAVE_BUILD_REPO": "127.0.0.1:9/wave/build", "WAVE_WORKER_CONCURRENCY": "2"}

    def query(sql: str) -> Rows:
        with closing(sqlite3.connect(data_dir / "wave.sqlite3", timeout=20)) as database:
            return list(database.execute(sql).fetchall())

    service = start_service(data_dir, **env)
    try:
        service.wait_ready()
        tokens = []
        for names in REQUESTS:
            response = httpx.post(f"{service.url}/container-token", json=downloads.body(*names), timeout=30)
            assert response.status_code == 200, response.text
            tokens.append(str(response.json()["containerToken"]))
        wait_for(running(query), timeout=30, what="a download to be claimed")
        time.sleep(1)  # inside the file server's pause: mid-download
        processes = service.pids()
        for pid in processes:  # web, worker and its pool, beat, and `manage.py run` itself: a power cut
            os.kill(pid, signal.SIGKILL)
        service.process.wait()
        wait_until(lambda: not service.pids(), timeout=10, what="every process of the service to be gone")
        interrupted = {row[4] for row in running(query)()}
        assert interrupted, "no download was running when the service was killed"
        log = service.log()
        service = start_service(data_dir, WAVE_PORT=str(service.port), **env)
        service.wait_ready()
        back = time.monotonic()

        rows = wait_for(settled(query, 4), timeout=SETTLE_SECONDS, what="every layer to settle")
        assert time.monotonic() - back < SETTLE_SECONDS
        assert query(TOKENS) == [(token,) for token in tokens]
        attempts = {name: 2 for name in downloads.layers if downloads.url(name) in interrupted}
        assert rows == downloads.ready(tokens, REQUESTS, attempts), log[-3000:] + service.log()[-6000:]
    finally:
        service.terminate()
