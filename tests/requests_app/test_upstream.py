"""The upstream check of a request's source image, against real registries with real auth."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_django.fixtures import Settings

from requests_app.models import ContainerRequest
from tests.conftest import PushedImage
from tests.requests_app.conftest import Post
from tests.support.fake_registry import OCI_INDEX, OCI_MANIFEST, FakeRegistry
from tests.support.images import Builder
from tests.support.registry import ANONYMOUS, start_registry

pytestmark = pytest.mark.django_db


def credentials_file(tmp_path: Path, image: PushedImage, password: str | None = None) -> str:
    path = tmp_path / "registry-credentials.json"
    entry = {"username": image.registry.username, "password": password or image.registry.password}
    path.write_text(json.dumps({image.registry.host: entry}))
    return str(path)


@pytest.mark.parametrize("fixture_name", ["basic_image", "token_image"])
def test_private_image_needs_the_service_credentials(
    fixture_name: str, request: pytest.FixtureRequest, post: Post, settings: Settings, tmp_path: Path
) -> None:
    image: PushedImage = request.getfixturevalue(fixture_name)
    refused = post({"containerImage": image.reference})
    assert refused.status_code == 400
    assert refused.json() == {
        "message": f"Container image '{image.reference}' does not exist or access is not authorized"
    }
    assert ContainerRequest.objects.count() == 0

    settings.WAVE_REGISTRY_CREDENTIALS = credentials_file(tmp_path, image, password="wrong")
    assert post({"containerImage": image.reference}).status_code == 400
    assert ContainerRequest.objects.count() == 0

    settings.WAVE_REGISTRY_CREDENTIALS = credentials_file(tmp_path, image)
    accepted = post({"containerImage": image.reference})
    assert accepted.status_code == 200, accepted.content
    stored = ContainerRequest.objects.get(token=accepted.json()["containerToken"])
    assert stored.source_digest == image.digest


def test_token_flow_asks_for_pull_scope_with_basic_credentials(
    token_image: PushedImage, post: Post, settings: Settings, tmp_path: Path
) -> None:
    token_server = token_image.registry.token_server
    assert token_server is not None
    settings.WAVE_REGISTRY_CREDENTIALS = credentials_file(tmp_path, token_image)
    token_server.requests.clear()
    assert post({"containerImage": token_image.reference}).status_code == 200
    assert [(r.username, r.scopes) for r in token_server.requests] == [
        (token_image.registry.username, ["repository:library/busybox:pull"])
    ]


def test_upstream_answer_is_cached_briefly(builder: Builder, busybox_image_id: str, post: Post) -> None:
    registry = start_registry(ANONYMOUS)
    try:
        reference = f"{registry.host}/library/busybox:cached"
        builder.push(busybox_image_id, reference)
        assert post({"containerImage": reference}).status_code == 200
    finally:
        registry.stop()
    # The registry is gone: the cached answer still accepts the same image.
    assert post({"containerImage": reference}).status_code == 200
    assert ContainerRequest.objects.filter(source_image=reference).count() == 2


def test_unreachable_registry_is_503_and_stores_nothing(post: Post, settings: Settings) -> None:
    from tests.support.network import free_port

    response = post({"containerImage": f"127.0.0.1:{free_port()}/library/busybox:1"})
    assert response.status_code == 503
    assert response.json()["message"].startswith("Registry '127.0.0.1:")
    assert "is unreachable" in response.json()["message"]
    assert ContainerRequest.objects.count() == 0


def assert_platform_refused(response, image: str, platform: str, available: str) -> None:
    assert response.status_code == 400, response.content
    assert response.json() == {
        "message": f"Container image '{image}' is not available for platform '{platform}'"
        f" - available platforms: {available}"
    }
    assert ContainerRequest.objects.count() == 0


@pytest.mark.parametrize("v2", [False, True])
def test_a_platform_a_single_image_lacks_is_refused(post: Post, anonymous_image: PushedImage, v2: bool) -> None:
    body = {"containerImage": anonymous_image.reference, "containerPlatform": "linux/arm64"}
    assert_platform_refused(post(body, v2=v2), anonymous_image.reference, "linux/arm64", "linux/amd64")
    assert_platform_refused(
        post({**body, "dryRun": True}, v2=True), anonymous_image.reference, "linux/arm64", "linux/amd64"
    )
    accepted = post({**body, "containerPlatform": "x86_64"}, v2=v2)
    assert accepted.status_code == 200, accepted.content


def test_a_platform_an_index_lacks_is_refused(post: Post, multiplatform_image: PushedImage) -> None:
    image = multiplatform_image.reference
    refused = post({"containerImage": image, "containerPlatform": "linux/arm/v7"})
    assert_platform_refused(refused, image, "linux/arm/v7", "linux/amd64, linux/arm64")
    for platform in ("linux/arm64", "linux/amd64", "aarch64"):
        accepted = post({"containerImage": image, "containerPlatform": platform})
        assert accepted.status_code == 200, accepted.content


def test_an_image_of_another_platform_is_served_as_is_when_no_platform_is_named(
    builder: Builder, anonymous_image: PushedImage, post: Post
) -> None:
    reference = f"{anonymous_image.registry.host}/library/busybox-arm64:latest"
    builder.push(builder.busybox_image(arch="arm64"), reference)
    env = {"env": ["A=1"]}
    assert_platform_refused(
        post({"containerImage": reference, "containerPlatform": "linux/amd64", "containerConfig": env}),
        reference,
        "linux/amd64",
        "linux/arm64",
    )
    assert post({"containerImage": reference, "containerConfig": env}).status_code == 200


def test_an_index_must_offer_the_default_platform_to_be_augmented(
    builder: Builder, anonymous_image: PushedImage, post: Post
) -> None:
    reference = f"{anonymous_image.registry.host}/library/busybox-arm-only:latest"
    builder.push_index({"arm64": builder.busybox_image(arch="arm64")}, reference)
    assert_platform_refused(
        post({"containerImage": reference, "containerConfig": {"env": ["A=1"]}}),
        reference,
        "linux/amd64",
        "linux/arm64",
    )
    assert post({"containerImage": reference}).status_code == 200  # served unchanged: the runtime picks


def test_upstream_platforms_are_cached(builder: Builder, busybox_image_id: str, post: Post) -> None:
    registry = start_registry(ANONYMOUS)
    try:
        reference = f"{registry.host}/library/busybox:platforms"
        builder.push(busybox_image_id, reference)
        assert post({"containerImage": reference, "containerPlatform": "linux/amd64"}).status_code == 200
    finally:
        registry.stop()
    # The registry is gone: the tag's digest and that digest's platforms are still known.
    assert post({"containerImage": reference, "containerPlatform": "linux/amd64"}).status_code == 200
    refused = post({"containerImage": reference, "containerPlatform": "linux/arm64"})
    assert refused.json()["message"].endswith("available platforms: linux/amd64")


def test_platforms_are_fetched_again_when_the_tag_moves(
    builder: Builder, anonymous_image: PushedImage, post: Post, settings: Settings
) -> None:
    settings.WAVE_UPSTREAM_CACHE_TTL = 0  # every request asks which manifest the tag names now
    reference = f"{anonymous_image.registry.host}/library/busybox-moving:latest"
    builder.push(builder.busybox_image(arch="amd64"), reference)
    body = {"containerImage": reference, "containerPlatform": "linux/arm64"}
    assert_platform_refused(post(body), reference, "linux/arm64", "linux/amd64")
    builder.push_index({arch: builder.busybox_image(arch=arch) for arch in ("amd64", "arm64")}, reference)
    accepted = post(body)
    assert accepted.status_code == 200, accepted.content


@pytest.fixture
def fake_registry() -> Iterator[FakeRegistry]:
    registry = FakeRegistry().start()
    yield registry
    registry.stop()


def test_index_entries_without_a_platform_of_an_image_are_not_offered(post: Post, fake_registry: FakeRegistry) -> None:
    amd64 = fake_registry.image("library/app", "amd64")
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": amd64,
                "size": 1,
                "platform": {"os": "linux", "architecture": "amd64"},
            },
            {"mediaType": OCI_MANIFEST, "digest": amd64, "size": 1, "platform": "linux/arm64"},  # not an object
            {
                "mediaType": OCI_MANIFEST,
                "digest": amd64,
                "size": 1,
                "platform": {"os": "unknown", "architecture": "unknown"},
            },
            {"mediaType": OCI_MANIFEST, "digest": amd64, "size": 1},
        ],
    }
    fake_registry.put_manifest("library/app", "v1", index, OCI_INDEX)
    image = f"{fake_registry.host}/library/app:v1"
    assert_platform_refused(
        post({"containerImage": image, "containerPlatform": "arm64"}), image, "linux/arm64", "linux/amd64"
    )
    assert post({"containerImage": image, "containerPlatform": "amd64"}).status_code == 200


def test_documents_that_name_no_platform_are_not_checked(post: Post, fake_registry: FakeRegistry) -> None:
    fake_registry.put_manifest("library/odd", "index", {"schemaVersion": 2, "manifests": "none"}, OCI_INDEX)
    fake_registry.put_manifest("library/odd", "image", b"not json at all", OCI_MANIFEST)
    fake_registry.image("library/odd", "traversal", config_digest="../../../../etc/passwd")
    for tag in ("index", "image", "traversal"):
        response = post({"containerImage": f"{fake_registry.host}/library/odd:{tag}", "containerPlatform": "arm64"})
        assert response.status_code == 200, (tag, response.content)
    assert ("GET", "/etc/passwd") not in fake_registry.requests
    assert not [path for _method, path in fake_registry.requests if "passwd" in path]


def test_an_unreachable_registry_answers_503_with_retry_after(post: Post, settings: Settings) -> None:
    settings.WAVE_SSRF_ALLOW = ["localhost", "127.0.0.1", "::1"]
    response = post({"containerImage": "localhost:1/x/y:latest"})
    assert response.status_code == 503, response.content
    assert response["Retry-After"] == "10"
    assert response.json() == {"message": "Registry 'localhost:1' is unreachable: ConnectError"}
    assert ContainerRequest.objects.count() == 0
