"""Builds whose worker runs out of time or dies: each test has its own build worker (the only one consuming
the builds queue while it runs), so that its settings apply."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.utils import timezone
from pytest_django.fixtures import Settings

from builds.models import Build
from builds.services import build_cancel, build_reap
from requests_app.models import ContainerRequest
from tests.builds.test_build_pulls import build_worker, containerfile, request_build, share_blob_store, wait_finished
from tests.conftest import PushedImage
from tests.support.asgi_server import AsgiServer
from tests.support.network import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def build_repo(anonymous_image: PushedImage) -> str:
    return f"{anonymous_image.registry.host}/wave/build"


def test_a_build_past_the_timeout_is_killed_leaving_nothing(
    proxy: AsgiServer, anonymous_image: PushedImage, build_repo: str, settings: Settings, tmp_path: Path
) -> None:
    settings.WAVE_BUILD_REPO = build_repo
    settings.WAVE_CACHE_REPO = None
    worker = build_worker(tmp_path / "worker", build_repo, WAVE_BUILD_TIMEOUT="6")
    share_blob_store(settings, worker)
    try:
        body = {"containerFile": containerfile(anonymous_image, "RUN sleep 120")}
        created = request_build(proxy, body).json()
        build = wait_finished(created["buildId"], timeout=120)
        assert build.state == "failed"
        assert build.failure_reason == f"Container image build timed out '{build.target_image}'"
        leftovers = (
            list((tmp_path / "worker" / "builds").glob("*")) if (tmp_path / "worker" / "builds").exists() else []
        )
        assert leftovers == []
        # Killed with its namespace: gone once the kernel reaped it (a moment after the build ended).
        wait_until(lambda: "sleep 120" not in running_commands(), timeout=15, what="the RUN step's process to go")
        assert str(tmp_path / "worker") not in Path("/proc/self/mountinfo").read_text()
    finally:
        worker.stop()


def test_a_build_whose_worker_is_killed_is_failed_by_the_reaper_and_rebuilt(
    proxy: AsgiServer, anonymous_image: PushedImage, build_repo: str, settings: Settings, tmp_path: Path
) -> None:
    settings.WAVE_BUILD_REPO = build_repo
    settings.WAVE_CACHE_REPO = None
    worker = build_worker(tmp_path / "worker", build_repo)
    share_blob_store(settings, worker)
    body = {"containerFile": containerfile(anonymous_image, "RUN sleep 30")}
    try:
        created = request_build(proxy, body).json()
        wait_until(lambda: Build.objects.get(build_id=created["buildId"]).state == "running", timeout=60,
                   what="the build to start")  # fmt: skip
        worker.kill()
    finally:
        worker.stop()
    later = timezone.now() + dt.timedelta(seconds=django_settings.WAVE_BUILD_STALE_AFTER + 1)
    assert build_reap(now=later).failed == 1
    build = Build.objects.get(build_id=created["buildId"])
    assert (build.state, build.failure_reason) == ("failed", "build worker lost")
    assert build_reap(now=later).failed == 0  # once
    retry = request_build(proxy, body).json()
    assert retry["buildId"] == created["buildId"].replace("_1", "_2")
    assert ContainerRequest.objects.filter(build_id=retry["buildId"]).count() == 1


def test_a_cancelled_build_is_killed_within_a_heartbeat(
    proxy: AsgiServer, anonymous_image: PushedImage, build_repo: str, settings: Settings, tmp_path: Path
) -> None:
    settings.WAVE_BUILD_REPO = build_repo
    settings.WAVE_CACHE_REPO = None
    worker = build_worker(tmp_path / "worker", build_repo, WAVE_BUILD_HEARTBEAT="1", WAVE_BUILD_STALE_AFTER="10")
    share_blob_store(settings, worker)
    try:
        created = request_build(proxy, {"containerFile": containerfile(anonymous_image, "RUN sleep 97")}).json()
        wait_until(lambda: "sleep 97" in running_commands(), timeout=120, what="the RUN step to start")
        build = Build.objects.get(build_id=created["buildId"])
        assert build_cancel(build=build, by="an operator")
        wait_until(lambda: "sleep 97" not in running_commands(), timeout=20, what="the build to be killed")
        wait_until(lambda: not any((tmp_path / "worker" / "builds").glob("*")), timeout=20, what="its work dir to go")
        build.refresh_from_db()
        assert (build.state, build.failure_reason) == ("cancelled", "Build cancelled by an operator")
    finally:
        worker.stop()


def running_commands() -> str:
    return subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout


def test_a_worker_stopped_mid_build_gives_the_build_back_and_the_next_worker_builds_it(
    proxy: AsgiServer, anonymous_image: PushedImage, build_repo: str, settings: Settings, tmp_path: Path
) -> None:
    """Ctrl-C of `make run` (SIGTERM to the worker's main process: a warm shutdown): the build is killed and
    queued again at its next heartbeat, the worker stops well before a cold shutdown, the next worker builds it."""
    settings.WAVE_BUILD_REPO = build_repo
    settings.WAVE_CACHE_REPO = None
    fast = {"WAVE_BUILD_HEARTBEAT": "1", "WAVE_BUILD_STALE_AFTER": "10"}
    worker = build_worker(tmp_path / "worker", build_repo, **fast)
    share_blob_store(settings, worker)
    created = request_build(
        proxy, {"containerFile": containerfile(anonymous_image, "RUN sleep 5.37 && echo slept")}
    ).json()
    try:
        wait_until(lambda: "sleep 5.37" in running_commands(), timeout=120, what="the RUN step to start")
        os.kill(worker.process.pid, signal.SIGTERM)  # the main process only, as the process manager does
        worker.process.wait(timeout=12)
    finally:
        worker.stop()
    assert "sleep 5.37" not in running_commands()
    build = Build.objects.get(build_id=created["buildId"])
    assert (build.state, build.attempts, build.claimed_by) == ("pending", 0, "")
    assert not any((tmp_path / "worker" / "builds").glob("*"))
    again = worker.restart()
    try:
        assert wait_finished(created["buildId"], timeout=120).state == "succeeded"
    finally:
        again.stop()
