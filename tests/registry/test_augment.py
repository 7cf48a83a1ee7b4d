"""Augmentation as pure functions, on manifests and configs captured from the test registry."""

from __future__ import annotations

import json

import pytest
from django.core.cache import caches

from registry.augment import (
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    AugmentError,
    ContainerConfig,
    Document,
    InjectedLayerRef,
    augment_config,
    augment_image_manifest,
    augment_index,
    media_type_of,
    sha256_digest,
)
from registry.client import RegistryClient
from registry.platform import parse_platform
from tests.conftest import PushedImage
from tests.support.images import Builder

LAYER = InjectedLayerRef("sha256:" + "1" * 64, 1234, "sha256:" + "2" * 64)


@pytest.fixture
def client() -> RegistryClient:
    return RegistryClient(insecure=["127.0.0.1"], credentials=lambda host: None, cache=caches["default"])


@pytest.fixture(scope="session")
def oci_image(builder: Builder, busybox_image_id: str, anonymous_image: PushedImage) -> PushedImage:
    registry = anonymous_image.registry
    digest = builder.push(busybox_image_id, f"{registry.host}/library/busybox-oci:latest", manifest_format="oci")
    return PushedImage(registry=registry, repository="library/busybox-oci", tag="latest", digest=digest)


def captured(client: RegistryClient, image: PushedImage) -> tuple[bytes, str, bytes]:
    manifest, media_type, _ = client.get_manifest(image.registry.host, image.repository, image.tag)
    config_digest = json.loads(manifest)["config"]["digest"]
    return manifest, media_type, client.get_blob(image.registry.host, image.repository, config_digest)


@pytest.mark.parametrize(
    ("fixture_name", "layer_type"), [("anonymous_image", DOCKER_LAYER_GZIP), ("oci_image", OCI_LAYER_GZIP)]
)
def test_augmented_manifest_and_config(
    fixture_name: str, layer_type: str, request: pytest.FixtureRequest, client: RegistryClient
) -> None:
    image: PushedImage = request.getfixturevalue(fixture_name)
    manifest_bytes, media_type, config_bytes = captured(client, image)
    assert media_type == (DOCKER_MANIFEST if fixture_name == "anonymous_image" else OCI_MANIFEST)
    config = ContainerConfig(cmd=["echo", "hi"], env=["A=1"], working_dir="/w", layers=[LAYER])

    result = augment_image_manifest(manifest_bytes, media_type, config, lambda digest: config_bytes)
    new_config, new_manifest = result.generated
    assert result.served is new_manifest
    assert new_manifest.media_type == media_type
    assert new_manifest.digest == sha256_digest(new_manifest.content)

    original = json.loads(manifest_bytes)
    served = json.loads(new_manifest.content)
    assert served["config"]["digest"] == new_config.digest
    assert served["config"]["size"] == len(new_config.content)
    assert served["layers"][:-1] == original["layers"]
    assert served["layers"][-1] == {"mediaType": layer_type, "size": 1234, "digest": LAYER.gzip_digest}

    before, after = json.loads(config_bytes), json.loads(new_config.content)
    assert after["rootfs"]["diff_ids"] == [*before["rootfs"]["diff_ids"], LAYER.tar_digest]
    assert after["config"]["Cmd"] == ["echo", "hi"]
    assert after["config"]["WorkingDir"] == "/w"
    assert after["config"]["Env"] == [*before["config"]["Env"], "A=1"]
    assert after["architecture"] == before["architecture"]


def test_index_rewrites_only_the_matching_entry(client: RegistryClient, multiplatform_image: PushedImage) -> None:
    host, repository = multiplatform_image.registry.host, multiplatform_image.repository
    index_bytes, index_type, _ = client.get_manifest(host, repository, "latest")

    def fetch_manifest(digest: str) -> tuple[bytes, str]:
        content, media_type, _ = client.get_manifest(host, repository, digest)
        return content, media_type

    config = ContainerConfig(env=["B=2"])
    result = augment_index(index_bytes, index_type, parse_platform("arm64"), config, fetch_manifest,
                           lambda digest: client.get_blob(host, repository, digest))  # fmt: skip
    before = {m["platform"]["architecture"]: m for m in json.loads(index_bytes)["manifests"]}
    after = {m["platform"]["architecture"]: m for m in json.loads(result.served.content)["manifests"]}
    assert after["amd64"] == before["amd64"]
    assert after["arm64"]["digest"] != before["arm64"]["digest"]
    assert after["arm64"]["digest"] in {d.digest for d in result.generated}
    assert result.served.media_type == index_type
    with pytest.raises(AugmentError, match=r"Cannot find matching platform 'linux/arm/v7' in the image index"):
        augment_index(index_bytes, index_type, parse_platform("linux/arm/v7"), config, fetch_manifest, lambda d: b"")


@pytest.mark.parametrize(
    ("original", "chain"),
    [(["/docker-entrypoint.sh"], "/docker-entrypoint.sh"), (["/bin/tini", "--"], '["/bin/tini", "--"]'), (None, None)],
)
def test_new_entrypoint_records_the_original_in_wave_entry_chain(original: list[str] | None, chain: str | None) -> None:
    config = {"config": {"Entrypoint": original, "Env": ["PATH=/bin"]}, "rootfs": {"type": "layers", "diff_ids": []}}
    result = json.loads(augment_config(json.dumps(config).encode(), ContainerConfig(entrypoint=["/new"])))
    assert result["config"]["Entrypoint"] == ["/new"]
    expected_env = ["PATH=/bin"] + ([f"WAVE_ENTRY_CHAIN={chain}"] if chain else [])
    assert result["config"]["Env"] == expected_env


def test_media_type_prefers_the_document_then_the_registry() -> None:
    assert media_type_of(b'{"mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}') == (
        "application/vnd.oci.image.index.v1+json"
    )
    assert media_type_of(b'{"schemaVersion": 2, "manifests": []}', "application/json") == (
        "application/vnd.oci.image.index.v1+json"
    )
    assert media_type_of(b'{"schemaVersion": 2}', DOCKER_MANIFEST) == DOCKER_MANIFEST
    with pytest.raises(AugmentError):
        media_type_of(b"<html>")


def test_document_digest_is_of_the_exact_bytes() -> None:
    document = Document(b'{"a":1}', OCI_MANIFEST)
    assert document.digest == sha256_digest(b'{"a":1}')
    assert document.size == 7


NESTED = b"[" * 100_000 + b"]" * 100_000


def test_documents_nested_too_deeply_are_malformed_not_crashes() -> None:
    config = ContainerConfig(layers=(LAYER,))
    with pytest.raises(AugmentError, match="not valid JSON"):
        media_type_of(NESTED)
    with pytest.raises(AugmentError, match="The upstream manifest is malformed"):
        augment_image_manifest(NESTED, OCI_MANIFEST, config, fetch_blob=lambda digest: b"{}")
    manifest = json.dumps({"config": {"digest": "sha256:" + "3" * 64}, "layers": []}).encode()
    with pytest.raises(AugmentError, match="The upstream image config is malformed"):
        augment_image_manifest(manifest, OCI_MANIFEST, config, fetch_blob=lambda digest: NESTED)
    with pytest.raises(AugmentError, match="The upstream image index is malformed"):
        augment_index(NESTED, "application/vnd.oci.image.index.v1+json", parse_platform("linux/amd64"), config,
                      fetch_manifest=lambda digest: (b"", ""), fetch_blob=lambda digest: b"{}")  # fmt: skip


EVIL = "../../../../etc/passwd"
CONFIG = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + "c" * 64, "size": 2}


def never_fetched(digest: str) -> bytes:
    raise AssertionError(f"fetched {digest}")


def never_fetched_manifest(digest: str) -> tuple[bytes, str]:
    raise AssertionError(f"fetched {digest}")


@pytest.mark.parametrize(
    "manifest",
    [
        {"config": {**CONFIG, "digest": EVIL}, "layers": []},
        {"config": {**CONFIG, "digest": "sha256:" + "C" * 64}, "layers": []},
        {"config": CONFIG, "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": EVIL, "size": 1}]},
        {"config": CONFIG, "layers": ["sha256:" + "1" * 64]},
        {"config": CONFIG, "layers": {"digest": "sha256:" + "1" * 64}},
    ],
)
def test_digests_of_an_upstream_manifest_are_checked_before_any_fetch(manifest: dict[str, object]) -> None:
    content = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, **manifest}).encode()
    with pytest.raises(AugmentError, match=r"^The upstream manifest is malformed$"):
        augment_image_manifest(content, OCI_MANIFEST, ContainerConfig(env=["A=1"]), never_fetched)


@pytest.mark.parametrize(
    "entry",
    [
        {"digest": EVIL, "platform": {"os": "linux", "architecture": "amd64"}},
        {"digest": "sha256:" + "1" * 64, "platform": "linux/amd64"},
        {"digest": "sha256:" + "1" * 64, "platform": ["linux", "amd64"]},
        {"digest": "sha256:" + "1" * 64, "mediaType": ["x"], "platform": {"os": "linux", "architecture": "amd64"}},
    ],
)
def test_entries_of_an_upstream_index_are_checked_before_any_fetch(entry: dict[str, object]) -> None:
    content = json.dumps({"schemaVersion": 2, "manifests": [entry]}).encode()
    with pytest.raises(AugmentError, match=r"^The upstream image index is malformed$"):
        augment_index(content, "application/vnd.oci.image.index.v1+json", parse_platform("linux/amd64"),
                      ContainerConfig(env=["A=1"]), never_fetched_manifest, never_fetched)  # fmt: skip
