"""Freeze: the generated Containerfile, its sealed layers, the requests refused (nothing stored), and end to end
with buildah: a Containerfile build and an augmented image frozen into a registry with Basic auth, pulled
directly from there with the caller's login."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from django.conf import settings as django_settings
from django.test import Client
from pytest_django.fixtures import Settings

from builds.freeze import freeze_containerfile, freeze_layer_missing, freeze_layers, layer_file
from builds.logs import build_log_text
from builds.models import Build
from builds.services import build_context_settled
from requests_app.models import ContainerRequest, LayerDownload
from tests.builds.test_build_pulls import build_worker, share_blob_store, wait_finished
from tests.conftest import PushedImage
from tests.support.asgi_server import AsgiServer
from tests.support.http_files import FileServer
from tests.support.images import run, skopeo_copy, skopeo_inspect
from tests.support.layers import make_layer
from tests.support.tower import TowerStandIn
from tests.support.worker import Worker
from wave_site.blobstore import blob_store_put

DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64
REPOSITORY = "registry.example.org/me/frozen"


def expected_freeze_file(seal: str) -> str:
    return "\n".join([
        "FROM registry.example.org/lib/base:1.0",
        f"ADD wave-layers/sha256-{'a' * 64}.tar.gz /",
        f"ADD wave-layers/sha256-{'b' * 64}.tar.gz /",
        'WORKDIR "/work dir"',
        'ENV GREETING="hello \\"world\\" \\$HOME"',
        'ENV EMPTY=""',
        'ENTRYPOINT ["/bin/sh", "-c"]',
        'CMD ["echo hi"]',
        f"# Layers verified by digest, sealed by this service: {seal}",
        "",
    ])  # fmt: skip


def test_the_freeze_containerfile_applies_the_config_line_by_line() -> None:
    text = freeze_containerfile(
        base="FROM registry.example.org/lib/base:1.0\n", repository=REPOSITORY, layer_digests=[DIGEST_A, DIGEST_B],
        working_dir="/work dir", env=['GREETING=hello "world" $HOME', "EMPTY="], entrypoint=["/bin/sh", "-c"],
        cmd=["echo hi"],
    )  # fmt: skip
    seal = text.splitlines()[-1].rsplit(" ", 1)[1]
    assert len(seal) == 64
    assert text.splitlines() == expected_freeze_file(seal).splitlines()
    assert freeze_layers(text, repository=REPOSITORY) == [DIGEST_A, DIGEST_B]


def test_a_freeze_without_config_is_the_base_alone() -> None:
    assert freeze_containerfile(base="FROM busybox\nRUN true", repository=REPOSITORY) == "FROM busybox\nRUN true\n"


def test_a_containerfile_naming_layer_files_without_the_seal_gets_no_blobs(settings: Settings) -> None:
    sealed = freeze_containerfile(base="FROM busybox", repository=REPOSITORY, layer_digests=[DIGEST_A])
    forged = f"FROM busybox\nADD {layer_file(DIGEST_A)} /\n"
    assert freeze_layers(forged, repository=REPOSITORY) == []
    assert (
        freeze_layers(sealed.replace(DIGEST_A.split(":")[1], DIGEST_B.split(":")[1]), repository=REPOSITORY) == []
    )  # seal of A only
    # Copied into a build pushed elsewhere (anyone's repository, the service's own): no layers.
    assert freeze_layers(sealed, repository="registry.example.org/thief/copy") == []
    assert freeze_layers(sealed, repository=REPOSITORY) == [DIGEST_A]
    settings.SECRET_KEY = "another-key"
    assert freeze_layers(sealed, repository=REPOSITORY) == []  # only this service's key seals


def test_a_build_waits_until_every_sealed_layer_is_stored() -> None:
    text = freeze_containerfile(base="FROM busybox", repository=REPOSITORY, layer_digests=[DIGEST_A, DIGEST_B])
    assert freeze_layer_missing(text, repository=REPOSITORY) == DIGEST_A
    blob_store_put(DIGEST_A, b"a")
    assert freeze_layer_missing(text, repository=REPOSITORY) == DIGEST_B
    blob_store_put(DIGEST_B, b"b")
    assert freeze_layer_missing(text, repository=REPOSITORY) == ""


@pytest.mark.parametrize("env", [["A=one\nRUN evil"], ["BAD NAME=x"]])
def test_a_value_that_cannot_be_one_line_is_refused(client: Client, db: None, env: list[str]) -> None:
    body = {"containerImage": "busybox", "freeze": True, "buildRepository": "registry.example.org/me/frozen",
            "containerConfig": {"env": env}}  # fmt: skip
    answer = client.post("/v1alpha2/container", body, content_type="application/json")
    assert answer.status_code == 400
    assert "env" in answer.json()["message"]
    assert not Build.objects.exists()


@pytest.mark.parametrize("path", ["/container-token", "/v1alpha2/container"])
def test_freeze_without_build_repository_is_refused(client: Client, db: None, path: str) -> None:
    answer = client.post(path, {"containerImage": "busybox", "freeze": True}, content_type="application/json")
    assert answer.status_code == 400
    assert answer.json() == {"message": "Attribute `buildRepository` must be specified when using freeze mode"}
    assert not Build.objects.exists()
    assert not ContainerRequest.objects.exists()


def freeze_body(image: str, repository: str, **extra: object) -> dict[str, object]:
    return {"containerImage": image, "freeze": True, "buildRepository": repository, **extra}


def test_freeze_of_an_anonymous_caller_to_a_foreign_repository_is_refused(
    client: Client, db: None, basic_image: PushedImage
) -> None:
    layer = make_layer({"x.txt": b"x"})
    body = freeze_body(
        basic_image.reference,
        f"{basic_image.registry.host}/me/frozen",
        containerConfig={"layers": [layer.as_request(location="https://example.org/x.tar.gz")]},
    )
    answer = client.post("/v1alpha2/container", body, content_type="application/json")
    assert answer.status_code == 400
    assert "towerAccessToken" in answer.json()["message"]
    assert not Build.objects.exists()
    assert not LayerDownload.objects.exists()
    assert not ContainerRequest.objects.exists()


@pytest.mark.parametrize("login", ["none", "wrong"])
def test_freeze_to_a_registry_the_caller_has_no_valid_login_for_is_refused(
    client: Client, tower: TowerStandIn, basic_image: PushedImage, login: str
) -> None:
    registry = basic_image.registry
    alice = tower.add_user(41, "alice", "alice@example.org")
    if login == "wrong":
        tower.add_credentials(alice, name="fixture", registry=registry.host, user_name=registry.username,
                              password="not-the-password")  # fmt: skip
    access, _ = tower.issue_tokens(alice)
    body = freeze_body(basic_image.reference, f"{registry.host}/alice/frozen", towerAccessToken=access,
                       towerEndpoint=tower.url)  # fmt: skip
    answer = client.post("/v1alpha2/container", body, content_type="application/json")
    assert answer.status_code == 400
    message = answer.json()["message"]
    if login == "none":
        assert message == (f"Container build repository '{registry.host}/alice/frozen': no credentials for registry "
                           f"'{registry.host}' in your Tower account - add them to freeze an image there")  # fmt: skip
    else:
        assert message == (f"Container build repository '{registry.host}/alice/frozen': registry '{registry.host}' "
                           "refuses the credentials of your Tower account")  # fmt: skip
    assert not Build.objects.exists()
    assert not ContainerRequest.objects.exists()


# --- End to end: buildah, the Tower caller's login, a registry with Basic auth ---------------------------


@pytest.fixture(scope="module")
def freeze_worker(django_db_setup: None, django_db_blocker, anonymous_image: PushedImage, layer_worker: Worker
) -> Iterator[Worker]:  # fmt: skip
    """A build worker beside the downloads worker (one blob store); the service's own repository elsewhere."""
    with django_db_blocker.unblock():
        # One secret with this process, as every process of a deployment: Tower sessions decrypt, seals verify.
        worker = build_worker(layer_worker.data_dir, f"{anonymous_image.registry.host}/wave/build",
                              WAVE_SECRET_KEY=django_settings.SECRET_KEY)  # fmt: skip
    yield worker
    worker.stop()


@pytest.fixture
def service(proxy: AsgiServer, freeze_worker: Worker, anonymous_image: PushedImage, settings: Settings) -> AsgiServer:
    settings.WAVE_BUILD_REPO = f"{anonymous_image.registry.host}/wave/build"
    settings.WAVE_CACHE_REPO = None
    share_blob_store(settings, freeze_worker)
    return proxy


def tower_caller(tower: TowerStandIn, registry_image: PushedImage, user_id: int) -> dict[str, str]:
    registry = registry_image.registry
    user = tower.add_user(user_id, f"user{user_id}", f"user{user_id}@example.org")
    tower.add_credentials(user, name="fixture", registry=registry.host, user_name=registry.username,
                          password=registry.password)  # fmt: skip
    access, _ = tower.issue_tokens(user)
    return {"towerAccessToken": access, "towerEndpoint": tower.url}


def unpack_with(reference: str, creds: str, into: Path) -> Path:
    skopeo_copy(reference, into / "layout", creds=creds)
    run(["umoci", "unpack", "--rootless", "--image", f"{into / 'layout'}:latest", str(into / "bundle")])
    return into / "bundle" / "rootfs"


@pytest.mark.slow
@pytest.mark.parametrize("path", ["/container-token", "/v1alpha2/container"])
def test_a_containerfile_build_is_frozen_into_the_callers_registry(
    service: AsgiServer, tower: TowerStandIn, anonymous_image: PushedImage, basic_image: PushedImage,
    tmp_path: Path, path: str,
) -> None:  # fmt: skip
    registry = basic_image.registry
    repository = f"{registry.host}/frozen/app{len(path)}"
    text = f"FROM {anonymous_image.reference}\nRUN echo frozen-by-wave > /frozen.txt\n"
    body = {"containerFile": base64.b64encode(text.encode()).decode(), "freeze": True, "buildRepository": repository,
            **tower_caller(tower, basic_image, 51)}  # fmt: skip
    answer = httpx.post(f"{service.url}{path}", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    created = answer.json()
    build = Build.objects.get(build_id=created["buildId"])
    assert build.container_file == text
    assert created["targetImage"] == f"{repository}:{build.container_id}" == build.target_image
    assert created["containerImage"] == created["targetImage"]
    assert created["freeze"] is True
    assert "containerToken" not in created
    assert "expiration" not in created
    assert not ContainerRequest.objects.exists()  # nothing to serve through the proxy

    build = wait_finished(build.build_id)
    assert (build.state, build.failure_reason) == ("succeeded", ""), (build.failure_reason, build_log_text(build=build))
    creds = f"{registry.username}:{registry.password}"
    assert skopeo_inspect(created["targetImage"], creds=creds)["Digest"] == build.digest
    rootfs = unpack_with(created["targetImage"], creds, tmp_path)
    assert (rootfs / "frozen.txt").read_text() == "frozen-by-wave\n"
    with pytest.raises(RuntimeError):
        skopeo_inspect(created["targetImage"])  # not anonymously: the caller's registry, the caller's login

    # The same freeze again: the image is in the caller's repository (asked with their login), nothing is built.
    again = httpx.post(f"{service.url}{path}", json=body, timeout=60).json()
    assert (again["targetImage"], again["buildId"], again["freeze"]) == (created["targetImage"], build.build_id, True)
    if path == "/v1alpha2/container":
        assert (again["cached"], again["succeeded"]) == (True, True)
    assert Build.objects.filter(target_image=build.target_image).count() == 1


@pytest.mark.slow
def test_an_augmented_image_is_frozen_with_its_layers_env_and_entrypoint(
    service: AsgiServer, tower: TowerStandIn, anonymous_image: PushedImage, basic_image: PushedImage,
    file_server: FileServer, tmp_path: Path,
) -> None:  # fmt: skip
    registry = basic_image.registry
    fetched = make_layer({"opt/tool/run.sh": b"#!/bin/sh\necho tool\n"})
    inline = make_layer({"etc/frozen.conf": b"inline=yes\n"})
    file_server.files["tool.tar.gz"] = fetched.gzip_bytes
    config = {
        "layers": [fetched.as_request(location=f"{file_server.url}/slow/tool.tar.gz"), inline.as_request()],
        "env": ["TOOL_HOME=/opt/tool", "GREETING=hello world"],
        "entrypoint": ["/bin/sh", "/opt/tool/run.sh"],
        "cmd": ["--verbose"],
        "workingDir": "/opt/tool",
    }
    body = freeze_body(anonymous_image.reference, f"{registry.host}/frozen/tool", containerConfig=config,
                       **tower_caller(tower, basic_image, 52))  # fmt: skip
    answer = httpx.post(f"{service.url}/v1alpha2/container", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    created = answer.json()
    assert created["freeze"] is True
    assert "containerToken" not in created
    build = Build.objects.get(build_id=created["buildId"])
    assert created["targetImage"] == f"{registry.host}/frozen/tool:{build.container_id}" == build.target_image
    assert build.container_file.startswith(f"FROM {anonymous_image.reference}\n")
    assert freeze_layers(build.container_file, repository=build.repository) == [fetched.gzip_digest, inline.gzip_digest]
    assert LayerDownload.objects.get().gzip_digest == fetched.gzip_digest  # the http layer, fetched and verified

    build = wait_finished(build.build_id)
    assert (build.state, build.failure_reason) == ("succeeded", ""), (build.failure_reason, build_log_text(build=build))
    creds = f"{registry.username}:{registry.password}"
    image = skopeo_inspect(created["targetImage"], creds=creds, config=True)["config"]
    assert {"TOOL_HOME=/opt/tool", "GREETING=hello world"} <= set(image["Env"])
    assert image["Entrypoint"] == ["/bin/sh", "/opt/tool/run.sh"]
    assert image["Cmd"] == ["--verbose"]
    assert image["WorkingDir"] == "/opt/tool"
    download = LayerDownload.objects.get()
    assert download.state == "ready"
    assert build.started_at is not None
    assert download.finished_at is not None
    assert download.finished_at <= build.started_at  # the build was sent first, and waited for its layer
    rootfs = unpack_with(created["targetImage"], creds, tmp_path)
    assert (rootfs / "opt" / "tool" / "run.sh").read_bytes() == b"#!/bin/sh\necho tool\n"
    assert (rootfs / "etc" / "frozen.conf").read_text() == "inline=yes\n"
    assert not (rootfs / "wave-layers").exists()  # the tar.gz files were unpacked, not copied

    # The sealed Containerfile, as its build page shows it, sent by anyone as a plain build into the service's
    # repository: the seal names the caller's repository, so no layer of the blob store gets into that build.
    copied = {"containerFile": base64.b64encode(build.container_file.encode()).decode()}
    stolen = httpx.post(f"{service.url}/v1alpha2/container", json=copied, timeout=60)
    assert stolen.status_code == 200, stolen.text
    theft = wait_finished(stolen.json()["buildId"])
    assert theft.repository == f"{anonymous_image.registry.host}/wave/build"
    assert (theft.state, theft.digest) == ("failed", "")
    assert "wave-layers/" in build_log_text(build=theft)  # buildah found no such file to ADD


def pending_freeze_build(container_file: str) -> Build:
    return Build.objects.create(
        build_id="bd-00000000000000f1_1", container_id="00000000000000f1", number=1,
        target_image=f"{REPOSITORY}:00000000000000f1", repository=REPOSITORY,
        container_file=container_file,
    )  # fmt: skip


def test_a_settled_layer_download_sends_the_freeze_build_waiting_for_it(db: None) -> None:
    build = pending_freeze_build(
        freeze_containerfile(base="FROM busybox", repository=REPOSITORY, layer_digests=[DIGEST_A, DIGEST_B])
    )
    blob_store_put(DIGEST_B, b"b")
    assert build_context_settled(gzip_digest=DIGEST_B) == 1  # sent: it finds A missing, and waits again
    assert build_context_settled(gzip_digest="sha256:" + "c" * 64) == 0  # another layer: not this build
    build.refresh_from_db()
    assert build.state == "pending"


def test_a_failed_layer_download_fails_the_freeze_build_waiting_for_it(db: None) -> None:
    build = pending_freeze_build(
        freeze_containerfile(base="FROM busybox", repository=REPOSITORY, layer_digests=[DIGEST_A])
    )
    assert build_context_settled(gzip_digest=DIGEST_A, failure_reason="Layer digest mismatch") == 1
    build.refresh_from_db()
    assert (build.state, build.failure_reason) == ("failed", "Build context download failed: Layer digest mismatch")
