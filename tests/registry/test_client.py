"""The upstream client against real registries: auth flows, token cache, refresh on 401, errors."""

from __future__ import annotations

import pytest
from django.core.cache import caches

from registry.client import (
    Credentials,
    ManifestUnknownError,
    RegistryClient,
    RegistryUnauthorizedError,
    RegistryUnavailableError,
    parse_challenge,
)
from registry.reference import parse_image
from tests.conftest import PushedImage
from tests.support.network import free_port

INSECURE = ["127.0.0.1"]


def make_client(image: PushedImage | None = None, *, password: str | None = None) -> RegistryClient:
    registry = image.registry if image else None

    def credentials(host: str) -> Credentials | None:
        if registry is None or registry.username is None or host != registry.host:
            return None
        return Credentials(registry.username, password or registry.password or "")

    return RegistryClient(insecure=INSECURE, credentials=credentials, cache=caches["default"], backoff=0.01)


def test_challenges_are_parsed_quoted_or_not() -> None:
    bearer = parse_challenge('Bearer realm="https://auth.io/token",service="reg.io",scope="repository:a:pull"')
    assert (bearer.scheme, bearer.realm, bearer.service) == ("bearer", "https://auth.io/token", "reg.io")
    assert parse_challenge("Bearer realm=https://a.io/t,service=s").realm == "https://a.io/t"
    assert parse_challenge('Basic realm="x"').scheme == "basic"
    assert parse_challenge(None).scheme == "anonymous"


def test_credentials_never_show_their_password() -> None:
    credentials = Credentials("user", "s3cret")
    assert "s3cret" not in repr(credentials)
    assert "s3cret" not in credentials.fingerprint(b"key")
    assert credentials.fingerprint(b"key") != credentials.fingerprint(b"other")


@pytest.mark.django_db
@pytest.mark.parametrize("fixture_name", ["anonymous_image", "basic_image", "token_image"])
def test_head_and_get_manifest_in_every_auth_flavour(fixture_name: str, request: pytest.FixtureRequest) -> None:
    image: PushedImage = request.getfixturevalue(fixture_name)
    client = make_client(image)
    ref = parse_image(image.reference)
    head = client.head_manifest(ref)
    assert head.digest == image.digest
    content, media_type, digest = client.get_manifest(ref.registry, ref.repository, "latest")
    assert digest == image.digest
    assert media_type == "application/vnd.docker.distribution.manifest.v2+json"
    assert head.size == len(content)


@pytest.mark.django_db
def test_bearer_token_is_reused_then_refetched_after_a_401(token_image: PushedImage) -> None:
    server = token_image.registry.token_server
    assert server is not None
    client = make_client(token_image)
    ref = parse_image(token_image.reference)
    server.requests.clear()
    client.head_manifest(ref)
    client.head_manifest(ref)
    assert len(server.requests) == 1  # the cached token served the second request

    key = client._token_key(ref.registry, ref.repository, client.credentials(ref.registry))
    client.cache.set(key, "not-a-valid-token", 300)  # as if the registry stopped accepting it
    assert client.head_manifest(ref).digest == token_image.digest
    assert len(server.requests) == 2


@pytest.mark.django_db
def test_wrong_password_and_missing_manifest(token_image: PushedImage, basic_image: PushedImage) -> None:
    with pytest.raises(RegistryUnauthorizedError):
        make_client(token_image, password="wrong").head_manifest(parse_image(token_image.reference))
    with pytest.raises(RegistryUnauthorizedError):
        make_client(basic_image, password="wrong").head_manifest(parse_image(basic_image.reference))
    missing = parse_image(f"{basic_image.registry.host}/library/busybox:missing")
    with pytest.raises(ManifestUnknownError):
        make_client(basic_image).head_manifest(missing)


@pytest.mark.django_db
def test_config_blob_is_verified_against_its_digest(anonymous_image: PushedImage) -> None:
    import json

    client = make_client(anonymous_image)
    ref = parse_image(anonymous_image.reference)
    content, _, _ = client.get_manifest(ref.registry, ref.repository, ref.version)
    config_digest = json.loads(content)["config"]["digest"]
    config = json.loads(client.get_blob(ref.registry, ref.repository, config_digest))
    assert config["architecture"] == "amd64"


@pytest.mark.django_db
def test_unreachable_registry() -> None:
    with pytest.raises(RegistryUnavailableError, match="is unreachable: ConnectError"):
        make_client().head_manifest(parse_image(f"127.0.0.1:{free_port()}/a/b:1"))


@pytest.mark.django_db
def test_oversized_upstream_documents_are_refused(
    anonymous_image: PushedImage, monkeypatch: pytest.MonkeyPatch
) -> None:
    import registry.client as client_module

    monkeypatch.setattr(client_module, "MAX_RESPONSE_BYTES", 100)  # the busybox manifest is ~430 bytes
    with pytest.raises(client_module.RegistryError, match="sent more than 100 bytes"):
        make_client(anonymous_image).get_manifest(anonymous_image.registry.host, "library/busybox", "latest")
