"""A worker SIGKILLed mid-download, whole or one pool child, in Redis mode (a private Redis as broker, the
test database) and in embedded mode (SQLite and the filesystem broker): once the worker is back, every
accepted layer ends READY (or FAILED with a reason) within the download timeout + 60 s, and none is lost.

Requests are accepted by the real API code (Django's test client in `manage.py shell`, on the same
database and broker as the worker); the worker runs the reaper (Celery beat inside it) with small
thresholds so that each test stays well under a minute.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.db import connection

from tests.conftest import PushedImage
from tests.support.http_files import FileServer
from tests.support.layers import Layer, make_layer
from tests.support.servers import start_private_redis
from tests.support.service import REPO
from tests.support.worker import Worker, start_worker, worker_environment

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

DOWNLOAD_TIMEOUT = 20
FAST_RECOVERY = {
    "WAVE_LAYER_DOWNLOAD_HEARTBEAT": "1",
    "WAVE_LAYER_DOWNLOAD_STALE_AFTER": "5",
    "WAVE_LAYER_REAP_INTERVAL": "1",
    "WAVE_LAYER_DOWNLOAD_TIMEOUT": str(DOWNLOAD_TIMEOUT),
}
# Accepts requests as the API does (view, services, enqueue on commit), from the worker's own environment.
POST_REQUESTS = """
import json, os
from django.test import Client
client = Client(REMOTE_ADDR="192.0.2.30")
tokens = []
for body in json.loads(os.environ["FAULT_BODIES"]):
    response = client.post("/container-token", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 200, response.content
    tokens.append(response.json()["containerToken"])
print("TOKENS=" + json.dumps(tokens))
"""
LAYERS = """
SELECT r.token, l.position, l.state, l.failure_reason, d.url, d.state, d.attempts, d.claimed_by
FROM requests_app_injectedlayer l
JOIN requests_app_containerrequest r ON r.id = l.request_id
JOIN requests_app_layerdownload d ON d.id = l.download_id
ORDER BY r.id, l.position
"""


@dataclass
class Site:
    """Where the worker runs: its database and broker, an environment for `manage.py`, SQL reads of the outcome."""

    mode: str
    data_dir: Path
    database_url: str | None
    redis_url: str | None
    query: Callable[[str], list[tuple[object, ...]]]

    def environment(self, **extra: str) -> dict[str, str]:
        return worker_environment(
            database_url=self.database_url, redis_url=self.redis_url, data_dir=self.data_dir,
            ssrf_allow="127.0.0.1", env={**FAST_RECOVERY, **extra},
        )  # fmt: skip

    def manage(self, *args: str, **extra: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=REPO, env=self.environment(**extra),
            capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def start_worker(self) -> Worker:
        return start_worker(
            database_url=self.database_url, redis_url=self.redis_url, data_dir=self.data_dir,
            ssrf_allow="127.0.0.1", pool="prefork", beat=True, env=FAST_RECOVERY,
        )  # fmt: skip

    def post(self, bodies: list[dict[str, object]]) -> list[str]:
        output = self.manage("shell", "-c", POST_REQUESTS, FAULT_BODIES=json.dumps(bodies))
        return list(json.loads(output.split("TOKENS=", 1)[1]))

    def layers(self) -> list[tuple[object, ...]]:
        return self.query(LAYERS)


@pytest.fixture(params=["redis", "embedded"])
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Site]:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    if request.param == "redis":
        database = connection.settings_dict
        url = f"postgres://{database['USER']}:{database['PASSWORD']}@{database['HOST']}:{database['PORT']}/{database['NAME']}"

        def query_postgres(sql: str) -> list[tuple[object, ...]]:
            with connection.cursor() as cursor:
                cursor.execute(sql)
                return list(cursor.fetchall())

        with start_private_redis() as redis:
            yield Site("redis", data_dir, url, redis.url, query_postgres)
        return

    def query_sqlite(sql: str) -> list[tuple[object, ...]]:
        with sqlite3.connect(data_dir / "wave.sqlite3", timeout=20) as database:
            return list(database.execute(sql).fetchall())

    site = Site("embedded", data_dir, None, None, query_sqlite)
    site.manage("migrate", "--no-input", "-v", "0")
    yield site


def request_body(image: PushedImage, layers: list[tuple[Layer, str]]) -> dict[str, object]:
    return {"containerImage": image.reference,
            "containerConfig": {"layers": [layer.as_request(location=url) for layer, url in layers]}}  # fmt: skip


def wait_for(condition: Callable[[], object], *, timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.mark.parametrize("kill", ["whole worker", "pool child"])
def test_a_worker_killed_mid_download_loses_no_layer(
    kill: str, site: Site, anonymous_image: PushedImage, file_server: FileServer
) -> None:
    file_server.slow_seconds = 3  # the kill lands while the worker waits for the answer
    first, second = make_layer({"first.txt": b"first\n"}), make_layer({"second.txt": b"second\n"})
    file_server.files.update({"first.tar.gz": first.gzip_bytes, "second.tar.gz": second.gzip_bytes})
    first_url, second_url = f"{file_server.url}/slow/first.tar.gz", f"{file_server.url}/slow/second.tar.gz"
    worker = site.start_worker()
    try:
        tokens = site.post([
            request_body(anonymous_image, [(first, first_url)]),
            request_body(anonymous_image, [(first, first_url), (second, second_url)]),  # joins the first download
        ])  # fmt: skip
        claimed = wait_for(  # the worker's start is slow on a loaded machine (two test processes, buildah)
            lambda: [row[7] for row in site.layers() if row[4] == first_url and row[5] == "running"],
            timeout=90, what="the first download to be claimed",
        )  # fmt: skip
        assert isinstance(claimed, list)
        time.sleep(1)  # inside the server's 3 s pause: mid-download
        old_scratch = site.data_dir / "blobs" / "scratch" / ".download-left-by-an-older-crash"
        if kill == "whole worker":
            worker.kill()
            old_scratch.write_bytes(b"")
            os.utime(old_scratch, (time.time() - DOWNLOAD_TIMEOUT - 5,) * 2)
            assert site.layers()[0][5] == "running"  # the dead worker's claim, until the reaper sees it stale
            worker = worker.restart()
        else:
            worker.kill_pool_child(int(str(claimed[0]).split(":")[1]))
        back = time.monotonic()

        def settled() -> list[tuple[object, ...]]:
            rows = site.layers()
            return rows if all(row[2] != "pending" for row in rows) else []

        rows = wait_for(settled, timeout=DOWNLOAD_TIMEOUT + 60, what="every layer to settle")
        assert time.monotonic() - back < DOWNLOAD_TIMEOUT + 60
    finally:
        worker.stop()

    assert rows == [
        (tokens[0], 0, "ready", "", first_url, "ready", 2, rows[0][7]),  # claimed twice: killed once
        (tokens[1], 0, "ready", "", first_url, "ready", 2, rows[1][7]),
        (tokens[1], 1, "ready", "", second_url, "ready", 1, rows[2][7]),
    ], worker.output()[-3000:]
    assert sorted(file_server.hits).count("/slow/first.tar.gz") == 2
    assert (site.data_dir / "blobs" / "blobs").is_dir()
    if kill == "whole worker":
        assert not old_scratch.exists()  # swept when the worker started again
