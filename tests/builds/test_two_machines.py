"""Two machines: a build worker with a data dir of its own, sharing only Postgres, Redis and an S3 blob store
(moto's server) with the web process, builds an image whose log, record, status and pull the web serves.

Nothing in the build path may go through a local disk the two share: the web's data dir and the worker's blob
folder stay empty, the log is objects in the bucket.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pytest_django.fixtures import Settings

from builds.logs import build_log_text, log_chunk_key
from builds.models import Build
from tests.builds.test_build_pulls import build_worker, containerfile, request_build, unpack
from tests.conftest import PushedImage
from tests.support.asgi_server import AsgiServer
from tests.support.layers import make_layer
from tests.support.s3 import ACCESS_KEY, REGION, SECRET_KEY, S3Bucket
from tests.support.worker import Worker

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class TwoMachines:
    web: AsgiServer
    web_data: Path
    worker: Worker
    bucket: S3Bucket


@pytest.fixture
def two_machines(
    proxy: AsgiServer, s3_blob_store: S3Bucket, anonymous_image: PushedImage, settings: Settings, tmp_path: Path
) -> Iterator[TwoMachines]:
    """The in-process web on a data dir of its own, and a build worker on another, both on one bucket."""
    build_repo = f"{anonymous_image.registry.host}/wave/build"
    web_data = tmp_path / "web-data"
    web_data.mkdir()
    settings.DATA_DIR = web_data
    settings.WAVE_BUILD_REPO = build_repo
    settings.WAVE_CACHE_REPO = None
    settings.STORAGES = {**settings.STORAGES, "default": s3_blob_store.storage_settings()}  # after `proxy`'s
    worker = build_worker(
        tmp_path / "worker-data", build_repo,
        WAVE_SECRET_KEY=settings.SECRET_KEY,
        WAVE_BLOB_STORE=f"s3://{s3_blob_store.name}/{s3_blob_store.prefix}",
        WAVE_S3_ENDPOINT_URL=s3_blob_store.endpoint, WAVE_S3_REGION=REGION,
        AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
    )  # fmt: skip
    try:
        yield TwoMachines(web=proxy, web_data=web_data, worker=worker, bucket=s3_blob_store)
    finally:
        worker.stop()


def files_under(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*")) if folder.exists() else []


def watch_build(web: AsgiServer, build_id: str, *, timeout: float = 240) -> list[tuple[str, str]]:
    """(state, log) as the web serves them, every 0.3 s until the build finished."""
    base = f"{web.url}/v1alpha1/builds/{build_id}"
    seen: list[tuple[str, str]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = httpx.get(base, timeout=10).json()["state"]
        seen.append((state, httpx.get(f"{base}/logs", timeout=10).text))
        if state not in Build.ACTIVE:
            return seen
        time.sleep(0.3)
    raise TimeoutError(f"build {build_id} still running after {timeout:.0f}s")


def test_a_worker_on_another_machine_builds_what_the_web_serves(
    two_machines: TwoMachines, anonymous_image: PushedImage, tmp_path: Path
) -> None:
    web, bucket = two_machines.web, two_machines.bucket
    context = make_layer({"greeting.txt": b"hello from the web's context\n"})
    body = {
        "containerFile": containerfile(
            anonymous_image, "COPY greeting.txt /ctx/greeting.txt",
            # `""`: the words are in the output, not in the STEP line that echoes the command
            'RUN echo step-""one && sleep 2 && echo built-on-the-worker > /two-machines.txt'
            ' && echo step-""two && sleep 3',
        ),
        "buildContext": context.as_request(),
    }  # fmt: skip
    answer = request_build(web, body)
    assert answer.status_code == 200, answer.text
    created = answer.json()
    build_id = created["buildId"]
    digest = context.gzip_digest.removeprefix("sha256:")
    stored = bucket.keys()
    assert f"{bucket.prefix}/blobs/sha256/{digest[:2]}/{digest}" in stored  # the web stored the context in S3

    seen = watch_build(web, build_id)
    final_state, final_log = seen[-1]
    assert final_state == "succeeded", final_log
    running_logs = [log for state, log in seen if state == "running"]
    # While the last RUN step sleeps, the web serves what the worker wrote so far (step-two came 1 s or more
    # after the log's first lines, so the worker's sink has flushed them).
    assert any("step-two" in log for log in running_logs), "the log served while the build ran lacked step-two"
    assert all(final_log.startswith(log) for log in running_logs)  # it grew, nothing rewritten
    assert "step-one" in final_log
    assert f"build {build_id} succeeded" in two_machines.worker.output()  # that worker built it

    build = Build.objects.get(build_id=build_id)
    base = f"{web.url}/v1alpha1/builds/{build_id}"
    record = httpx.get(base).json()
    assert (record["state"], record["status"], record["succeeded"], record["exitStatus"]) == (
        "succeeded", "COMPLETED", True, 0,
    )  # fmt: skip
    assert (record["targetImage"], record["digest"]) == (build.target_image, build.digest)
    assert build.digest.startswith("sha256:")
    status = httpx.get(f"{base}/status").json()
    assert (status["id"], status["status"], status["succeeded"]) == (build_id, "COMPLETED", True)
    logs = httpx.get(f"{base}/logs")
    assert logs.status_code == 200
    assert logs.text == final_log == build_log_text(build=build)

    # The log is objects in the bucket, one per chunk the row counts, and nothing else of the build.
    chunk_keys = [f"{bucket.prefix}/{log_chunk_key(build_id, n)}" for n in range(build.log_chunks)]
    assert build.log_chunks > 0
    stored = bucket.keys()
    assert [key for key in stored if key.startswith(f"{bucket.prefix}/builds/")] == chunk_keys
    assert b"".join(bucket.read(log_chunk_key(build_id, n)) for n in range(build.log_chunks)).decode() == final_log

    (tmp_path / "pulled").mkdir()
    rootfs = unpack(created["targetImage"], tmp_path / "pulled")  # skopeo through the web's proxy
    assert (rootfs / "two-machines.txt").read_text() == "built-on-the-worker\n"
    assert (rootfs / "ctx" / "greeting.txt").read_text() == "hello from the web's context\n"

    # No shared local disk: the web kept nothing of the build, the worker's blob folder stayed empty, and its
    # build work dir and unpacked context are gone.
    assert files_under(two_machines.web_data) == []
    worker_data = two_machines.worker.data_dir
    assert files_under(worker_data / "blobs") == []
    assert files_under(worker_data / "builds") == []
    assert files_under(worker_data / "tmp") == []


def test_the_log_before_a_silent_step_is_served_while_the_step_runs(
    two_machines: TwoMachines, anonymous_image: PushedImage
) -> None:
    step = 'RUN echo quiet-step-""begins && sleep 5 && echo quiet-step-""ends'  # the words only in the output
    body = {"containerFile": containerfile(anonymous_image, step)}
    created = request_build(two_machines.web, body).json()
    seen = watch_build(two_machines.web, created["buildId"])
    assert seen[-1][0] == "succeeded", seen[-1][1]
    assert "quiet-step-begins" in seen[-1][1]
    served_during_the_silence = [log for state, log in seen if state == "running" and "quiet-step-ends" not in log]
    assert any("quiet-step-begins" in log for log in served_during_the_silence)
