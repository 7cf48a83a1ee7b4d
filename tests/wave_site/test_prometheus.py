"""Prometheus `/metrics`: off by default, refused without its bearer token, counters that move with requests,
and the stored state (builds, layer downloads, queues) computed at scrape time. Pulls: test_pull_metrics.py."""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client
from django.utils import timezone
from django_redis import get_redis_connection  # type: ignore[import-untyped]
from prometheus_client import CollectorRegistry, multiprocess
from prometheus_client.parser import text_string_to_metric_families
from pytest_django.fixtures import Settings

from builds.models import Build
from builds.tasks import build_run_task
from requests_app.models import LayerDownload
from tests.support.service import REPO

TOKEN = "scrape-token-1"


@pytest.fixture
def metrics_on(settings: Settings) -> str:
    settings.WAVE_METRICS_ENABLED = True
    settings.WAVE_METRICS_TOKEN = TOKEN
    return f"Bearer {TOKEN}"


def samples(client: Client, authorization: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics", HTTP_AUTHORIZATION=authorization)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    found = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_off_by_default(client: Client, settings: Settings) -> None:
    settings.WAVE_METRICS_TOKEN = TOKEN
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 404
    assert b"wave_" not in response.content


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"Basic {TOKEN}", "Bearer ", TOKEN])
def test_refused_without_its_token(client: Client, metrics_on: str, authorization: str | None) -> None:
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    response = client.get("/metrics", **headers)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert b"wave_" not in response.content


@pytest.mark.django_db
def test_requests_counted_by_endpoint_and_status(client: Client, metrics_on: str) -> None:
    key = ("wave_http_requests_total", (("endpoint", "service-info"), ("method", "GET"), ("status", "200")))
    missing = ("wave_http_requests_total", (("endpoint", "build-record"), ("method", "GET"), ("status", "404")))
    before = samples(client, metrics_on)
    for _ in range(3):
        assert client.get("/service-info").status_code == 200
    assert client.get("/v1alpha1/builds/bd-0000000000000000_1").status_code == 404
    after = samples(client, metrics_on)
    assert after[key] - before.get(key, 0) == 3
    assert after[missing] - before.get(missing, 0) == 1


@pytest.mark.django_db
def test_nothing_counted_when_off(client: Client, settings: Settings, metrics_on: str) -> None:
    key = ("wave_http_requests_total", (("endpoint", "service-info"), ("method", "GET"), ("status", "200")))
    before = samples(client, metrics_on).get(key, 0)
    settings.WAVE_METRICS_ENABLED = False
    client.get("/service-info")
    settings.WAVE_METRICS_ENABLED = True
    assert samples(client, metrics_on).get(key, 0) == before


@pytest.mark.django_db
def test_stored_builds_downloads_and_queues_at_scrape_time(client: Client, metrics_on: str) -> None:
    now = timezone.now()
    common = {"container_file": "FROM busybox\n", "repository": "r", "platform": "linux/amd64"}
    for number, (state, seconds) in enumerate([("succeeded", 3), ("succeeded", 100), ("failed", 20)], start=1):
        Build.objects.create(
            build_id=f"bd-{number:016x}_1", container_id=f"{number:016x}", number=1, target_image=f"r:{number}",
            state=state, started_at=now - dt.timedelta(seconds=seconds), finished_at=now, **common,
        )  # fmt: skip
    Build.objects.create(build_id="bd-00000000000000ff_1", container_id="00000000000000ff", number=1,
                         target_image="r:ff", state="running", started_at=now, **common)  # fmt: skip
    LayerDownload.objects.create(
        identity="a" * 64, url="https://example.org/l.tar.gz", gzip_digest="sha256:" + "1" * 64, gzip_size=10,
        tar_digest="sha256:" + "2" * 64, state="ready", started_at=now, finished_at=now + dt.timedelta(seconds=2),
    )  # fmt: skip
    queued = samples(client, metrics_on)[("wave_queue_depth", (("queue", "builds"),))]  # what other tests left
    # Two real messages (of no build: a worker taking one finds nothing to do), taken back after the scrape.
    sent = [build_run_task.apply_async((2_000_000_000 + n,), retry=False).id for n in range(2)]
    redis = get_redis_connection("default")
    try:
        found = samples(client, metrics_on)
    finally:
        for message in redis.lrange("builds", 0, -1):
            if any(task_id.encode() in message for task_id in sent):
                redis.lrem("builds", 0, message)
    assert found[("wave_builds", (("kind", "build"), ("state", "succeeded")))] == 2
    assert found[("wave_builds", (("kind", "build"), ("state", "failed")))] == 1
    assert found[("wave_builds", (("kind", "build"), ("state", "running")))] == 1
    succeeded = (("kind", "build"), ("state", "succeeded"))

    def bucket(le: str) -> float:
        return found[("wave_build_duration_seconds_bucket", (("kind", "build"), ("le", le), ("state", "succeeded")))]

    assert [bucket("1.0"), bucket("5.0"), bucket("60.0"), bucket("120.0"), bucket("+Inf")] == [0, 1, 1, 2, 2]
    assert found[("wave_build_duration_seconds_gcount", succeeded)] == 2
    assert found[("wave_build_duration_seconds_gsum", succeeded)] == pytest.approx(103)
    assert ("wave_build_duration_seconds_gcount", (("kind", "build"), ("state", "running"))) not in found
    assert found[("wave_queue_depth", (("queue", "builds"),))] == queued + 2
    assert ("wave_queue_depth", (("queue", "layers"),)) in found
    assert found[("wave_layer_downloads", (("state", "ready"),))] == 1
    ready = (("state", "ready"),)
    assert found[("wave_layer_download_duration_seconds_bucket", (("le", "1.0"), *ready))] == 0
    assert found[("wave_layer_download_duration_seconds_bucket", (("le", "5.0"), *ready))] == 1


def test_web_workers_count_into_one_folder_summed_at_scrape(tmp_path: Path) -> None:
    """uvicorn's workers are processes: with metrics on, each writes its counters under the data dir (settings set
    prometheus-client's multiprocess folder), and a scrape reads them all."""
    script = (
        "import django; django.setup()\n"
        "from wave_site.metrics.prometheus import REQUESTS\n"
        "REQUESTS.labels('service-info', 'GET', '200').inc(3)\n"
    )
    env = {**os.environ, "WAVE_METRICS_ENABLED": "true", "WAVE_METRICS_TOKEN": TOKEN, "WAVE_DATA_DIR": str(tmp_path),
           "DJANGO_SETTINGS_MODULE": "wave_site.settings"}  # fmt: skip
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    for _worker in range(2):
        subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=60, cwd=REPO)
    folder = tmp_path / "prometheus" / socket.gethostname()
    assert len(list(folder.glob("counter_*.db"))) == 2  # one file per process
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(folder))  # type: ignore[no-untyped-call]
    value = registry.get_sample_value(
        "wave_http_requests_total", {"endpoint": "service-info", "method": "GET", "status": "200"}
    )
    assert value == 6


def test_enabled_without_a_token_is_refused_at_start(tmp_path: Path) -> None:
    env = {**os.environ, "WAVE_METRICS_ENABLED": "true", "WAVE_DATA_DIR": str(tmp_path),
           "DJANGO_SETTINGS_MODULE": "wave_site.settings"}  # fmt: skip
    env.pop("WAVE_METRICS_TOKEN", None)
    done = subprocess.run([sys.executable, "-c", "import django; django.setup()"], env=env, capture_output=True,
                          text=True, timeout=60, cwd=REPO)  # fmt: skip
    assert done.returncode != 0
    assert "WAVE_METRICS_ENABLED needs WAVE_METRICS_TOKEN" in done.stderr
    assert not (tmp_path / "prometheus").exists()
