"""The push side of the registry library against real registries: image copies (index, one platform), chunked
uploads, cross-repository mounts, Bearer push tokens; checked with skopeo."""

from __future__ import annotations

import hashlib

import pytest
from django.core.cache import caches

from registry.client import Credentials, RegistryClient, RegistryError, RegistryUnauthorizedError
from registry.platform import parse_platform
from registry.push import Blob, RegistryPusher, image_copy
from registry.reference import parse_image
from tests.conftest import PushedImage
from tests.support.images import skopeo_inspect

INSECURE = ["127.0.0.1"]


def client_for(*images: PushedImage) -> RegistryClient:
    logins = {image.registry.host: image.registry for image in images if image.registry.username}

    def credentials(host: str) -> Credentials | None:
        registry = logins.get(host)
        return Credentials(registry.username or "", registry.password or "") if registry else None

    return RegistryClient(insecure=INSECURE, credentials=credentials, cache=caches["default"], backoff=0.01)


def test_an_index_is_copied_with_every_platform_and_the_same_digests(
    multiplatform_image: PushedImage, basic_image: PushedImage
) -> None:
    lines: list[str] = []
    target = f"{basic_image.registry.host}/copies/index:v1"

    digest = image_copy(
        client_for(basic_image), source=parse_image(multiplatform_image.reference), target=parse_image(target),
        platform=None, log=lines.append,
    )  # fmt: skip

    assert digest == multiplatform_image.digest
    creds = basic_image.registry.creds
    assert skopeo_inspect(target, creds=creds, raw=True) == skopeo_inspect(multiplatform_image.reference, raw=True)
    for entry in skopeo_inspect(target, creds=creds, raw=True)["manifests"]:
        copied = skopeo_inspect(f"{basic_image.registry.host}/copies/index@{entry['digest']}", creds=creds)
        assert copied["Digest"] == entry["digest"]
        assert copied["Architecture"] == entry["platform"]["architecture"]
    assert lines[-1] == f"Tagged v1: {digest}\n"


def test_one_platform_of_an_index_is_copied_alone(multiplatform_image: PushedImage, basic_image: PushedImage) -> None:
    index = skopeo_inspect(multiplatform_image.reference, raw=True)
    arm = next(entry for entry in index["manifests"] if entry["platform"]["architecture"] == "arm64")
    target = f"{basic_image.registry.host}/copies/arm:v1"

    digest = image_copy(
        client_for(basic_image), source=parse_image(multiplatform_image.reference), target=parse_image(target),
        platform=parse_platform("linux/arm64"), log=lambda line: None,
    )  # fmt: skip

    assert digest == arm["digest"]
    copied = skopeo_inspect(target, creds=basic_image.registry.creds)
    assert (copied["Digest"], copied["Architecture"]) == (arm["digest"], "arm64")


def test_large_blobs_go_in_chunks_and_same_registry_copies_mount(basic_image: PushedImage) -> None:
    client = client_for(basic_image)
    lines: list[str] = []
    chunked = f"{basic_image.registry.host}/copies/chunked:v1"
    source = parse_image(basic_image.reference)

    # Same registry: every blob mounted from the source repository.
    image_copy(client, source=source, target=parse_image(chunked), platform=None, log=lines.append)

    assert [line for line in lines if line.startswith(("Mounted", "Copied"))] == [
        f"Mounted blob {blob['digest']} from library/busybox\n"
        for blob in [skopeo_inspect(basic_image.reference, creds=basic_image.registry.creds, raw=True)["config"],
                     *skopeo_inspect(basic_image.reference, creds=basic_image.registry.creds, raw=True)["layers"]]
    ]  # fmt: skip
    assert skopeo_inspect(chunked, creds=basic_image.registry.creds)["Digest"] == basic_image.digest

    pusher = RegistryPusher(client, monolithic_max=1024, chunk_size=1000)
    data = bytes(range(256)) * 20  # 5120 bytes: six PATCH chunks

    blob = Blob(digest="sha256:" + hashlib.sha256(data).hexdigest(), size=len(data))
    host = basic_image.registry.host
    pusher.blob_upload(host, "copies/blobs", blob, iter([data[:3000], data[3000:]]))
    assert pusher.blob_exists(host, "copies/blobs", blob.digest)
    assert client.get_blob(host, "copies/blobs", blob.digest) == data


def test_a_blob_that_does_not_match_its_digest_is_not_committed(basic_image: PushedImage) -> None:
    client = client_for(basic_image)
    host = basic_image.registry.host
    for pusher in (RegistryPusher(client), RegistryPusher(client, monolithic_max=10, chunk_size=100)):
        blob = Blob(digest="sha256:" + "0" * 64, size=300)
        with pytest.raises(RegistryError, match="does not match its digest"):
            pusher.blob_upload(host, "copies/bad", blob, iter([b"x" * 300]))
        assert not pusher.blob_exists(host, "copies/bad", blob.digest)


def test_a_bearer_registry_gives_a_push_token(anonymous_image: PushedImage, token_image: PushedImage) -> None:
    target = f"{token_image.registry.host}/copies/token:v1"

    digest = image_copy(
        client_for(token_image), source=parse_image(anonymous_image.reference), target=parse_image(target),
        platform=None, log=lambda line: None,
    )  # fmt: skip

    assert digest == anonymous_image.digest
    assert skopeo_inspect(target, creds=token_image.registry.creds)["Digest"] == anonymous_image.digest


def test_without_credentials_nothing_is_pushed(anonymous_image: PushedImage, basic_image: PushedImage) -> None:
    target = f"{basic_image.registry.host}/copies/refused:v1"

    with pytest.raises(RegistryUnauthorizedError):
        image_copy(
            client_for(), source=parse_image(anonymous_image.reference), target=parse_image(target), platform=None,
            log=lambda line: None,
        )  # fmt: skip

    assert not RegistryPusher(client_for(basic_image)).blob_exists(
        basic_image.registry.host, "copies/refused", skopeo_inspect(anonymous_image.reference)["Layers"][0]
    )
