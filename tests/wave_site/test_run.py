"""The whole service as `make run` starts it: every process, embedded or on Postgres + Redis."""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import wave_site
from tests.support.http_files import FileServer
from tests.support.images import Builder, skopeo_inspect
from tests.support.layers import make_layer
from tests.support.network import free_port, wait_until
from tests.support.service import REPO, RunningService, service_environment, start_service, throwaway_database

pytestmark = pytest.mark.slow


def admin_login(url: str, username: str, password: str) -> httpx.Response:
    with httpx.Client(base_url=url) as client:
        page = client.get("/admin/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        assert token, "no CSRF token on the login page"
        return client.post(
            "/admin/login/?next=/admin/",
            data={"csrfmiddlewaretoken": token.group(1), "username": username, "password": password},
            headers={"Referer": f"{url}/admin/login/"},
        )


# An idle Celery worker's warm shutdown takes ~5-7 s on the filesystem broker; nothing is killed.
STOP_SECONDS = 12


def assert_stops_cleanly(service: RunningService, signum: int = signal.SIGTERM) -> None:
    """Stopped within STOP_SECONDS by one signal to the group (as Ctrl-C or `kill` do), quietly: no SIGKILL,
    no cold shutdown, no ERROR line (Celery's prefork children are stopped by their own main process)."""
    assert service.pids(), "no process of the service was found"
    # A worker signalled before Celery installed its handlers just dies (no warm shutdown to observe).
    for worker in ("worker", "downloads", "maintenance"):
        wait_until(
            lambda worker=worker: re.search(rf"{worker}\s*\|.* ready\.", service.log()) is not None,
            timeout=60,
            what=f"the {worker} worker to be ready",
        )
    started = time.monotonic()
    os.killpg(service.process.pid, signum)
    service.process.wait(timeout=30)
    elapsed = time.monotonic() - started
    output = service.log()
    assert elapsed < STOP_SECONDS, output[-3000:]
    assert service.pids() == []
    stopping = output[output.index(f"{signal.Signals(signum).name} received") :]
    assert "SIGKILL" not in stopping
    assert "SIGQUIT" not in stopping
    assert "ForkPoolWorker" not in stopping
    assert not [line for line in stopping.splitlines() if " ERROR" in line or "Traceback" in line]
    for worker in ("worker", "downloads", "maintenance"):
        assert re.search(rf"{worker}\s*\| worker: Warm shutdown \(MainProcess\)", stopping), worker
        assert re.search(rf"system\s*\| {worker} stopped \(rc=0\)", stopping), worker
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{service.url}/service-info", timeout=2)


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[RunningService]:
    service = start_service(
        tmp_path / "data",
        WAVE_REGISTRY_PORT=str(free_port()),
        WAVE_ADMIN_PASSWORD="op-secret",
        WAVE_SSRF_ALLOW="127.0.0.1",
    )
    yield service
    service.terminate()


def test_embedded_service_serves_every_page_and_stops_cleanly(
    embedded: RunningService, builder: Builder, busybox_image_id: str, file_server: FileServer
) -> None:
    assert embedded.wait_ready(timeout=60) < 60
    url = embedded.url

    health = httpx.get(f"{url}/health", timeout=10)
    assert health.status_code == 200, health.text
    checks = health.json()["checks"]
    assert checks["database"] == {"status": "UP", "detail": "sqlite"}
    assert checks["cache"] == {"status": "UP", "detail": "FileBasedCache"}
    assert checks["broker"] == {"status": "UP", "detail": "filesystem"}
    assert checks["registry"]["status"] == "UP"

    info = httpx.get(f"{url}/service-info").json()
    assert info["serviceInfo"]["version"] == wave_site.__version__
    git = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=REPO, capture_output=True, text=True)
    assert info["serviceInfo"]["commitId"] == (git.stdout.strip() if git.returncode == 0 else "unknown")

    for path in ("/docs/", "/redoc/", "/openapi/", "/openapi/?format=json", "/admin/login/"):
        assert httpx.get(f"{url}{path}").status_code == 200, path
    docs = httpx.get(f"{url}/docs/").text
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', docs):
        assert httpx.get(f"{url}{asset}").status_code == 200, asset

    logged_in = admin_login(url, "admin", "op-secret")
    assert logged_in.status_code == 302
    assert logged_in.headers["Location"] == "/admin/"
    assert admin_login(url, "admin", "wrong").status_code == 200  # the form again, with an error

    # A TLS client hello on the plain-http port (skopeo tries TLS first) is refused, and the server goes on.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", embedded.port), timeout=5) as raw,
        pytest.raises((ssl.SSLError, ConnectionResetError, OSError)),
    ):
        context.wrap_socket(raw, server_hostname="localhost")
    assert httpx.get(f"{url}/service-info").status_code == 200

    # The whole product on the embedded defaults: an image in the local build registry, a request with a
    # layer the worker downloads (filesystem broker), pulled through the proxy served by uvicorn.
    registry_host = checks["registry"]["detail"]
    builder.push(busybox_image_id, f"{registry_host}/library/busybox:e2e")
    layer = make_layer({"e2e.txt": b"end to end\n"})
    file_server.files["e2e.tar.gz"] = layer.gzip_bytes
    created = httpx.post(f"{url}/container-token", json={
        "containerImage": f"{registry_host}/library/busybox:e2e",
        "containerConfig": {"env": ["E2E=1"], "layers": [layer.as_request(location=f"{file_server.url}/e2e.tar.gz")]},
    }).json()  # fmt: skip
    assert created["targetImage"].startswith(f"127.0.0.1:{embedded.port}/wt/")
    config = skopeo_inspect(created["targetImage"], config=True)  # waits for the worker's download
    assert "E2E=1" in config["config"]["Env"]
    assert config["rootfs"]["diff_ids"][-1] == layer.tar_digest
    status = httpx.get(f"{url}/v1alpha2/container/{created['containerToken']}/status").json()
    assert status["status"] == "DONE"
    assert status["succeeded"] is True

    output = embedded.log()
    for name in ("web", "worker", "downloads", "maintenance", "beat", "system"):
        assert re.search(rf"^\d\d:\d\d:\d\d {name}\s*\| ", output, re.MULTILINE), f"no output prefixed {name}"
    for name in ("registry", "web", "worker", "downloads", "maintenance", "beat"):
        assert re.search(rf"system\s*\| {name} started \(pid=\d+\)", output), f"{name} did not start"
    # Builds in processes; layer downloads in threads, a worker of their own; the periodic tasks in a third.
    assert re.search(r"worker\s*\|\s+\.> builds\s+exchange=builds", output)
    assert re.search(r"maintenance\s*\|\s+\.> default\s+exchange=default", output)
    assert not re.search(r"worker\s*\|\s+\.> default", output)
    assert re.search(r"worker\s*\| .*\.> concurrency: \d+ \(prefork\)", output)
    assert re.search(r"downloads\s*\|\s+\.> layers\s+exchange=layers", output)
    assert re.search(r"downloads\s*\| .*\.> concurrency: 16 \(thread\)", output)
    assert not re.search(r"worker\s*\|\s+\.> layers", output)
    assert re.search(r"downloads\s*\| .*Task requests_app.layer_download\[[0-9a-f-]+\] succeeded", output)
    assert "ready." in output  # the Celery worker connected to its broker
    assert "Error ID" not in output
    assert_stops_cleanly(embedded)
    assert (embedded.data_dir / "wave.sqlite3").is_file()
    assert (embedded.data_dir / "registry" / "data").is_dir()


def test_service_on_postgres_and_redis(tmp_path: Path) -> None:
    with throwaway_database("wave_run") as database_url:
        service = start_service(
            tmp_path / "data",
            DATABASE_URL=database_url,
            REDIS_URL="redis://127.0.0.1:6379/14",
            WAVE_REGISTRY_PORT=str(free_port()),
        )
        try:
            service.wait_ready(timeout=60)
            health = httpx.get(f"{service.url}/health", timeout=10)
            assert health.status_code == 200, health.text
            checks = health.json()["checks"]
            assert checks["database"]["detail"] == "postgresql"
            assert checks["cache"]["detail"] == "RedisCache"
            assert checks["broker"]["detail"] == "redis"
            assert not (service.data_dir / "wave.sqlite3").exists()
            assert_stops_cleanly(service)
        finally:
            service.terminate()


def test_two_services_run_side_by_side_with_their_own_registries(tmp_path: Path) -> None:
    first = start_service(tmp_path / "one")
    second = None
    try:
        first.wait_ready(timeout=60)
        second = start_service(tmp_path / "two")
        second.wait_ready(timeout=60)
        registries = set()
        for service in (first, second):
            health = httpx.get(f"{service.url}/health", timeout=10)
            assert health.status_code == 200, health.text
            registries.add(health.json()["checks"]["registry"]["detail"])
            remembered = (service.data_dir / "registry" / "port").read_text().strip()
            assert health.json()["checks"]["registry"]["detail"] == f"localhost:{remembered}"
        assert len(registries) == 2
    finally:
        first.terminate()
        if second is not None:
            second.terminate()
    assert first.pids() == []
    assert second.pids() == []


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("WAVE_PORT", "abc", "wave: configuration error: WAVE_PORT must be an integer, got 'abc'"),
        (
            "DATABASE_URL",
            "nonsense",
            "wave: configuration error: DATABASE_URL must be a URL with scheme postgres, postgresql, got 'nonsense'",
        ),
        (
            "REDIS_URL",
            "http://x",
            "wave: configuration error: REDIS_URL must be a URL with scheme redis, rediss, got 'http://x'",
        ),
        ("WAVE_BUILD_REPO", "http://reg.io/x", "wave: configuration error: WAVE_BUILD_REPO must be"),
        (
            "WAVE_BLOB_STORE",
            "s3://AKIAEXAMPLE:topsecret@bucket/wave",
            "wave: configuration error: WAVE_BLOB_STORE must be s3://bucket[/prefix], with credentials in AWS_",
        ),
    ],
)
def test_bad_setting_stops_make_run_with_one_line(tmp_path: Path, variable: str, value: str, message: str) -> None:
    port = free_port()
    env = service_environment(WAVE_DATA_DIR=str(tmp_path / "data"), **{variable: value})
    if variable != "WAVE_PORT":
        env["WAVE_PORT"] = str(port)
    result = subprocess.run(
        ["make", "--no-print-directory", "-s", "run"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("wave:")]
    assert len(errors) == 1
    assert errors[0].startswith(message)
    assert "Traceback" not in result.stderr
    assert "topsecret" not in result.stderr + result.stdout
    assert not (tmp_path / "data" / "wave.sqlite3").exists()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/service-info", timeout=2)


def test_wave_port_alone_names_pullable_images_and_ctrl_c_stops_quietly(
    tmp_path: Path, builder: Builder, busybox_image_id: str
) -> None:
    """No WAVE_SERVER_URL, no WAVE_SSRF_ALLOW: images are named after WAVE_PORT, the banner says so, the
    built-in registry is a source under both loopback names, and Ctrl-C (SIGINT) stops everything quietly."""
    port, registry_port = free_port(), free_port()
    service = start_service(
        tmp_path / "data",
        WAVE_PORT=str(port),
        WAVE_REGISTRY_PORT=str(registry_port),
        WAVE_SERVER_URL="",  # blank is unset
        WAVE_SSRF_ALLOW="",  # tests/settings.py allows loopback in this process's environment
    )
    try:
        service.wait_ready(timeout=60)
        output = service.log()
        assert f"Wave {wave_site.__version__} on http://localhost:{port} (listening on port {port})\n" in output
        assert f"  images are named localhost:{port}/wt/<token>/...;" in output
        assert f"  local registry: localhost:{registry_port} (push test images here;" in output
        health = httpx.get(f"{service.url}/health", timeout=10).json()
        assert health["checks"]["registry"] == {"status": "UP", "detail": f"localhost:{registry_port}"}

        builder.push(busybox_image_id, f"localhost:{registry_port}/library/busybox:first-hour")
        for name in ("localhost", "127.0.0.1"):
            created = httpx.post(
                f"{service.url}/container-token",
                json={"containerImage": f"{name}:{registry_port}/library/busybox:first-hour",
                      "containerConfig": {"env": ["FIRST_HOUR=1"]}},
                timeout=30,
            )  # fmt: skip
            assert created.status_code == 200, created.text
            target = created.json()["targetImage"]
            assert target.startswith(f"localhost:{port}/wt/{created.json()['containerToken']}/")
            assert "FIRST_HOUR=1" in skopeo_inspect(target, config=True)["config"]["Env"]

        # Another local registry is still refused, naming the way out.
        refused = httpx.post(
            f"{service.url}/container-token", json={"containerImage": f"127.0.0.1:{free_port()}/library/busybox:1"}
        )
        assert refused.status_code == 400
        assert refused.json()["message"] == (
            "Destination '127.0.0.1' is not allowed: it resolves to a private or local address"
            " (set WAVE_SSRF_ALLOW=127.0.0.1 to allow it)"
        )
        assert_stops_cleanly(service, signal.SIGINT)
    finally:
        service.terminate()
