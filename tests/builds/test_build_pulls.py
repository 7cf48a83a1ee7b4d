"""End to end: Containerfile builds requested through the API, built by a real worker with buildah, pushed
to a real registry and pulled with skopeo through the proxy."""

from __future__ import annotations

import base64
import concurrent.futures
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from django.conf import settings as django_settings
from django.db import connection
from pytest_django.fixtures import Settings

from builds.logs import build_log_text
from builds.models import Build
from tests.conftest import PushedImage
from tests.support.asgi_server import AsgiServer
from tests.support.http_files import FileServer
from tests.support.images import run, skopeo_copy, skopeo_inspect
from tests.support.layers import make_layer
from tests.support.network import wait_until
from tests.support.worker import Worker, start_worker

pytestmark = pytest.mark.slow


def database_url() -> str:
    db = connection.settings_dict
    return f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def build_worker(data_dir: Path, build_repo: str, **env: str) -> Worker:
    """A worker of the `builds` queue, as `manage.py run` starts one, building into `build_repo`."""
    data_dir.mkdir(parents=True, exist_ok=True)
    return start_worker(
        database_url=database_url(), redis_url=django_settings.REDIS_URL, data_dir=data_dir,
        ssrf_allow=",".join(django_settings.WAVE_SSRF_ALLOW), pool="prefork", queues="builds",
        env={"WAVE_BUILD_REPO": build_repo, "WAVE_CACHE_REPO": "", **env},
    )  # fmt: skip


@pytest.fixture(scope="module")
def build_repo(anonymous_image: PushedImage) -> str:
    return f"{anonymous_image.registry.host}/wave/build"


@pytest.fixture(scope="module")
def builds_worker(django_db_setup: None, django_db_blocker, build_repo: str, layer_worker: Worker) -> Iterator[Worker]:
    """A build worker on the same machine as the downloads worker (one data dir, one blob store), as `make run`."""
    with django_db_blocker.unblock():
        worker = build_worker(layer_worker.data_dir, build_repo)
    yield worker
    worker.stop()


def share_blob_store(settings: Settings, worker: Worker) -> None:
    """The web process reads the logs the worker writes: one blob store, as on one machine (S3 across machines)."""
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {**settings.STORAGES["default"], "OPTIONS": {"location": worker.blobs}},
    }


@pytest.fixture
def service(proxy: AsgiServer, builds_worker: Worker, build_repo: str, settings: Settings) -> AsgiServer:
    settings.WAVE_BUILD_REPO = build_repo
    settings.WAVE_CACHE_REPO = None
    share_blob_store(settings, builds_worker)
    return proxy


def containerfile(anonymous_image: PushedImage, *steps: str) -> str:
    text = "\n".join([f"FROM {anonymous_image.reference}", *steps]) + "\n"
    return base64.b64encode(text.encode()).decode()


def request_build(service: AsgiServer, body: dict[str, object], *, v2: bool = True) -> httpx.Response:
    path = "/v1alpha2/container" if v2 else "/container-token"
    return httpx.post(f"{service.url}{path}", json=body, timeout=60)


def wait_finished(build_id: str, timeout: float = 240) -> Build:
    def finished() -> bool:
        return Build.objects.get(build_id=build_id).state not in Build.ACTIVE

    wait_until(finished, timeout=timeout, what=f"build {build_id}", interval=0.5)
    return Build.objects.get(build_id=build_id)


def unpack(reference: str, into: Path) -> Path:
    skopeo_copy(reference, into / "layout")
    run(["umoci", "unpack", "--rootless", "--image", f"{into / 'layout'}:latest", str(into / "bundle")])
    return into / "bundle" / "rootfs"


def test_a_build_is_answered_at_once_then_pulled_when_done(
    service: AsgiServer, anonymous_image: PushedImage, build_repo: str, tmp_path: Path
) -> None:
    body = {"containerFile": containerfile(anonymous_image, "RUN echo built-by-wave > /hello.txt"),
            "containerConfig": {"env": ["FROM_REQUEST=yes"]}}  # fmt: skip
    answer = request_build(service, body)
    assert answer.status_code == 200, answer.text
    created = answer.json()
    build = Build.objects.get(build_id=created["buildId"])
    assert created["buildId"] == f"bd-{build.container_id}_1"
    assert created["cached"] is False
    assert created["detailsUri"] == f"{service.url}/view/builds/{created['buildId']}"
    assert "succeeded" not in created  # not known yet: the answer came before the build finished
    assert created["targetImage"] == f"{service.host}/wt/{created['containerToken']}/wave/build:{build.container_id}"
    assert build.target_image == f"{build_repo}:{build.container_id}"

    # The pull waits for the build, then serves the pushed image with the request's config applied.
    rootfs = unpack(created["targetImage"], tmp_path)
    assert (rootfs / "hello.txt").read_text() == "built-by-wave\n"
    config = skopeo_inspect(created["targetImage"], config=True)["config"]
    assert "FROM_REQUEST=yes" in config["Env"]

    build.refresh_from_db()
    assert (build.state, build.exit_status, build.failure_reason) == ("succeeded", 0, "")
    assert build.digest == skopeo_inspect(build.target_image)["Digest"]
    assert build.started_at is not None
    assert build.finished_at is not None
    assert "STEP" in build_log_text(build=build)  # buildah's steps, as they ran
    base = f"{service.url}/v1alpha1/builds/{build.build_id}"
    record = httpx.get(base).json()
    assert (record["buildId"], record["targetImage"], record["platform"], record["digest"]) == (
        build.build_id, build.target_image, "linux/amd64", build.digest,
    )  # fmt: skip
    assert (record["status"], record["succeeded"], record["exitStatus"]) == ("COMPLETED", True, 0)
    assert "RUN echo built-by-wave" in record["dockerFile"]
    state = httpx.get(f"{base}/status").json()
    assert (state["id"], state["status"], state["succeeded"]) == (build.build_id, "COMPLETED", True)
    logs = httpx.get(f"{base}/logs")
    assert logs.headers["Content-Type"].startswith("text/plain")
    assert logs.text == build_log_text(build=build)
    page = httpx.get(created["detailsUri"])
    assert page.status_code == 200
    assert build.build_id in page.text
    status = httpx.get(f"{service.url}/v1alpha2/container/{created['containerToken']}/status").json()
    assert (status["status"], status["succeeded"], status["buildId"]) == ("DONE", True, build.build_id)


def test_identical_requests_share_one_build(service: AsgiServer, anonymous_image: PushedImage) -> None:
    body = {"containerFile": containerfile(anonymous_image, "RUN echo shared > /shared.txt")}
    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(lambda _: request_build(service, body), range(5)))
    assert {answer.status_code for answer in answers} == {200}
    build_ids = {answer.json()["buildId"] for answer in answers}
    assert len(build_ids) == 1
    build = wait_finished(build_ids.pop())
    assert build.state == "succeeded"
    assert Build.objects.filter(container_id=build.container_id).count() == 1  # the builder ran once
    # The image exists now: the next identical request builds nothing.
    again = request_build(service, body).json()
    assert (again["buildId"], again["cached"], again["succeeded"]) == (build.build_id, True, True)
    v1 = request_build(service, body, v2=False).json()
    assert v1["buildId"] == build.build_id
    assert Build.objects.filter(container_id=build.container_id).count() == 1
    skopeo_inspect(again["targetImage"])  # served at once


def test_a_failing_build_fails_its_pull_with_the_reason_and_is_rebuilt_by_the_next_request(
    service: AsgiServer, anonymous_image: PushedImage
) -> None:
    body = {"containerFile": containerfile(anonymous_image, "RUN echo about-to-fail && exit 3")}
    created = request_build(service, body).json()
    with pytest.raises(RuntimeError) as pull:
        skopeo_inspect(created["targetImage"])
    build = Build.objects.get(build_id=created["buildId"])
    assert build.state == "failed"
    assert build.exit_status not in (None, 0)
    assert "exit status 3" in build.failure_reason
    assert "about-to-fail" in build_log_text(build=build)
    assert created["buildId"] in str(pull.value)
    assert f"/view/builds/{created['buildId']}" in str(pull.value)  # the pull error points to the log
    status = httpx.get(f"{service.url}/v1alpha2/container/{created['containerToken']}/status").json()
    assert (status["status"], status["succeeded"]) == ("DONE", False)
    assert "exit status 3" in status["reason"]
    retry = request_build(service, body).json()
    assert retry["buildId"] == created["buildId"].replace("_1", "_2")


@pytest.mark.parametrize("delivery", ["http", "data"])
def test_the_build_context_is_fetched_verified_and_unpacked_for_copy(
    service: AsgiServer, anonymous_image: PushedImage, file_server: FileServer, tmp_path: Path, delivery: str
) -> None:
    context = make_layer({"greeting.txt": f"hello from the {delivery} context\n".encode(), "sub/x.txt": b"x\n"})
    file_server.files["context.tar.gz"] = context.gzip_bytes
    location = f"{file_server.url}/context.tar.gz" if delivery == "http" else None
    body = {"containerFile": containerfile(anonymous_image, "COPY greeting.txt sub/x.txt /ctx/"),
            "buildContext": context.as_request(location=location)}  # fmt: skip
    created = request_build(service, body)
    assert created.status_code == 200, created.text
    rootfs = unpack(created.json()["targetImage"], tmp_path)
    assert (rootfs / "ctx" / "greeting.txt").read_text() == f"hello from the {delivery} context\n"
    assert (rootfs / "ctx" / "x.txt").read_text() == "x\n"
    build = Build.objects.get(build_id=created.json()["buildId"])
    assert build.context_digest == context.gzip_digest


def test_a_build_context_that_fails_verification_fails_the_build(
    service: AsgiServer, anonymous_image: PushedImage, file_server: FileServer
) -> None:
    context = make_layer({"a.txt": b"a\n"})
    tampered = make_layer({"a.txt": b"b\n"}).gzip_bytes
    file_server.files["bad.tar.gz"] = tampered
    declared = context.as_request(location=f"{file_server.url}/bad.tar.gz", gzipSize=len(tampered))  # digests tell
    body = {"containerFile": containerfile(anonymous_image, "COPY a.txt /a.txt"), "buildContext": declared}
    created = request_build(service, body).json()
    build = wait_finished(created["buildId"], timeout=120)
    assert build.state == "failed"
    assert build.failure_reason.startswith("Build context download failed: ")
    assert "digest" in build.failure_reason
    assert build.started_at is None  # buildah never ran
