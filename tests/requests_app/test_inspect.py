"""POST /v1alpha1/inspect: an image's manifest summary and config, read with the caller's credentials, against real
registry fixtures (and the Tower stand-in for a caller's credentials)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from pytest_django.fixtures import Settings

from credentials.clients import registry_client
from tests.conftest import PushedImage
from tests.support.images import skopeo_inspect
from tests.support.tower import TowerStandIn

pytestmark = pytest.mark.django_db

NOT_AUTHORIZED = "Container image '{image}' does not exist or access is not authorized"


def inspect(body: dict[str, Any]) -> Any:
    return Client().post("/v1alpha1/inspect", body, content_type="application/json", REMOTE_ADDR="192.0.2.7")


def expected_manifest(reference: str, *, creds: str | None = None) -> dict[str, Any]:
    """The manifest summary as skopeo reads the same image: digest, config and layers."""
    raw = skopeo_inspect(reference, creds=creds, raw=True)
    config = skopeo_inspect(reference, creds=creds, config=True)
    return {
        "config": {key: raw["config"][key] for key in ("digest", "size", "mediaType")},
        "layers": [{key: layer[key] for key in ("digest", "size", "mediaType")} for layer in raw["layers"]],
        "architecture": config["architecture"],
        "os": config["os"],
        "cmd": config["config"].get("Cmd"),
        "env": config["config"].get("Env"),
        "diffIds": config["rootfs"]["diff_ids"],
    }


def assert_describes(answer: Any, image: PushedImage, *, creds: str | None) -> None:
    assert answer.status_code == 200, answer.content
    container = answer.json()["container"]
    expected = expected_manifest(image.reference, creds=creds)
    assert (container["registry"], container["imageName"], container["reference"]) == (
        image.registry.host, image.repository, image.tag,
    )  # fmt: skip
    assert container["digest"] == image.digest
    assert "platforms" not in container
    manifest = container["manifest"]
    assert manifest["digest"] == image.digest
    assert manifest["config"] == expected["config"]
    assert manifest["layers"] == expected["layers"]
    config = container["config"]
    assert (config["architecture"], config["os"]) == (expected["architecture"], expected["os"])
    assert config["cmd"] == expected["cmd"] == ["/bin/sh"]
    assert config.get("env") == expected["env"]
    assert config["diffIds"] == expected["diffIds"]


def test_a_tower_caller_inspects_a_private_image_with_their_credentials(
    basic_image: PushedImage, tower: TowerStandIn
) -> None:
    registry = basic_image.registry
    assert registry.username
    assert registry.password
    alice = tower.add_user(21, "alice", "alice@example.org")
    tower.add_credentials(alice, name="fixture", registry=registry.host, user_name=registry.username,
                          password=registry.password)  # fmt: skip
    access, _ = tower.issue_tokens(alice)

    answer = inspect({"containerImage": basic_image.reference, "towerAccessToken": access, "towerEndpoint": tower.url})

    assert_describes(answer, basic_image, creds=registry.creds)
    assert "towerAccessToken" not in answer.content.decode()


def test_the_services_credentials_inspect_a_private_image(
    basic_image: PushedImage, settings: Settings, tmp_path: Path
) -> None:
    registry = basic_image.registry
    path = tmp_path / "credentials.json"
    path.write_text(json.dumps({registry.host: {"username": registry.username, "password": registry.password}}))
    settings.WAVE_REGISTRY_CREDENTIALS = str(path)

    answer = inspect({"containerImage": basic_image.reference})

    assert_describes(answer, basic_image, creds=registry.creds)


def test_a_private_image_without_credentials_is_refused(basic_image: PushedImage, tower: TowerStandIn) -> None:
    bob = tower.add_user(22, "bob", "bob@example.org")  # a Tower caller holding no credentials of that registry
    access, _ = tower.issue_tokens(bob)

    anonymous = inspect({"containerImage": basic_image.reference})
    without = inspect({"containerImage": basic_image.reference, "towerAccessToken": access, "towerEndpoint": tower.url})

    for answer in (anonymous, without):
        assert answer.status_code == 400
        assert answer.json() == {"message": NOT_AUTHORIZED.format(image=basic_image.reference)}
    assert registry_client().identity(basic_image.registry.host) == "anonymous"


def test_an_index_lists_its_platforms_and_describes_the_one_asked_for(multiplatform_image: PushedImage) -> None:
    index = skopeo_inspect(multiplatform_image.reference, raw=True)
    entries = {entry["platform"]["architecture"]: entry for entry in index["manifests"]}
    assert set(entries) == {"amd64", "arm64"}

    default = inspect({"containerImage": multiplatform_image.reference})
    arm = inspect({"containerImage": multiplatform_image.reference, "platform": "linux/aarch64"})

    assert default.status_code == 200, default.content
    container = default.json()["container"]
    assert container["digest"] == multiplatform_image.digest
    assert container["mediaType"] == index["mediaType"]
    assert container["platforms"] == [
        {"digest": entry["digest"], "size": entry["size"], "mediaType": entry["mediaType"], "os": "linux",
         "architecture": entry["platform"]["architecture"]}
        for entry in index["manifests"]
    ]  # fmt: skip
    for answer, arch in ((default, "amd64"), (arm, "arm64")):
        assert answer.status_code == 200, answer.content
        manifest = answer.json()["container"]["manifest"]
        assert (manifest["digest"], manifest["architecture"]) == (entries[arch]["digest"], arch)
        by_digest = f"{multiplatform_image.registry.host}/{multiplatform_image.repository}@{entries[arch]['digest']}"
        expected = expected_manifest(by_digest)
        assert manifest["layers"] == expected["layers"]
        assert answer.json()["container"]["config"]["architecture"] == arch == expected["architecture"]


def test_a_platform_the_index_does_not_offer_is_refused_naming_those_it_does(
    multiplatform_image: PushedImage,
) -> None:
    answer = inspect({"containerImage": multiplatform_image.reference, "platform": "linux/arm/v7"})

    assert answer.status_code == 400
    assert answer.json() == {
        "message": f"Container image '{multiplatform_image.reference}' is not available for platform 'linux/arm/v7' "
        "- available platforms: linux/amd64, linux/arm64"
    }


def test_a_single_image_of_another_platform_than_the_one_named_is_refused(anonymous_image: PushedImage) -> None:
    answer = inspect({"containerImage": anonymous_image.reference, "platform": "linux/arm64"})

    assert answer.status_code == 400
    assert answer.json() == {
        "message": f"Container image '{anonymous_image.reference}' is not available for platform 'linux/arm64' "
        "- available platforms: linux/amd64"
    }
    assert inspect({"containerImage": anonymous_image.reference, "platform": "linux/amd64"}).status_code == 200


def test_a_registry_the_ssrf_rules_refuse_is_a_400_and_is_not_contacted() -> None:
    answer = inspect({"containerImage": "169.254.169.254/latest/meta-data:1"})

    assert answer.status_code == 400
    assert "169.254.169.254" in answer.json()["message"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"containerImage": "UPPER/Case:1"}, "Invalid container image name"),
        ({"containerImage": "busybox", "platform": "linux/s390"}, "Unsupported container platform: linux/s390"),
    ],
)
def test_bad_input_is_a_400(body: dict[str, Any], message: str) -> None:
    answer = inspect(body)

    assert answer.status_code == 400
    assert message in answer.json()["message"]


def test_an_unreachable_registry_is_a_503() -> None:
    answer = inspect({"containerImage": "127.0.0.1:9/library/busybox:1"})

    assert answer.status_code == 503
    assert answer["Retry-After"]
