"""The upstream client against real registries: auth flows, token cache, refresh on 401, errors."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from cryptography.fernet import Fernet, InvalidToken
from django.core.cache import caches

from registry.client import (
    Credentials,
    ManifestUnknownError,
    RegistryClient,
    RegistryError,
    RegistryRateLimitedError,
    RegistryUnauthorizedError,
    RegistryUnavailableError,
    RepositoryUnknownError,
    UnsafeReferenceError,
    challenge_key,
    parse_challenge,
    token_key,
)
from registry.reference import ImageReference, parse_image
from registry.ssrf import DestinationRefusedError
from tests.conftest import PushedImage
from tests.support.fake_registry import FakeRegistry
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

    key = token_key(ref.registry, ref.repository, client.identity(ref.registry))
    assert isinstance(client.cache.get(key), str)
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


@pytest.fixture
def fake_registry() -> Iterator[FakeRegistry]:
    registry = FakeRegistry().start()
    yield registry
    registry.stop()


@pytest.mark.django_db
def test_a_view_for_other_credentials_shares_connections_and_tokens(token_image: PushedImage) -> None:
    client = make_client(token_image)
    anonymous = client.for_credentials(lambda host: None)
    assert anonymous.http is client.http
    assert anonymous.cache is client.cache
    ref = parse_image(token_image.reference)
    assert anonymous.identity(ref.registry) == "anonymous"
    assert client.identity(ref.registry) not in {"anonymous", token_image.registry.password}
    assert client.head_manifest(ref).digest == token_image.digest
    with pytest.raises(RegistryUnauthorizedError):
        anonymous.head_manifest(ref)
    assert client.credentials(ref.registry) is not None  # the view did not change the client it came from
    assert isinstance(client.cache.get(token_key(ref.registry, ref.repository, client.identity(ref.registry))), str)


@pytest.mark.django_db
def test_forget_authorization_drops_the_token_and_the_challenge(token_image: PushedImage) -> None:
    client = make_client(token_image)
    ref = parse_image(token_image.reference)
    assert client.authorization(ref.registry, ref.repository) is not None
    key = token_key(ref.registry, ref.repository, client.identity(ref.registry))
    assert client.cache.get(key) is not None
    assert client.cache.get(challenge_key(ref.registry)) is not None
    client.forget_authorization(ref.registry, ref.repository)
    assert client.cache.get(key) is None
    assert client.cache.get(challenge_key(ref.registry)) is None


@pytest.mark.django_db
def test_rate_limited_answers_carry_the_registrys_retry_after(fake_registry: FakeRegistry) -> None:
    digest = fake_registry.image("library/app", "v1")
    fake_registry.answers[f"/v2/library/app/manifests/{digest}"] = (429, {"Retry-After": "7"})
    fake_registry.answers["/v2/library/app/manifests/other"] = (429, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    with pytest.raises(RegistryRateLimitedError) as limited:
        make_client().get_manifest(fake_registry.host, "library/app", digest)
    assert limited.value.retry_after == 7
    assert fake_registry.requests.count(("GET", f"/v2/library/app/manifests/{digest}")) == 3  # retried twice
    with pytest.raises(RegistryRateLimitedError) as dated:
        make_client().get_manifest(fake_registry.host, "library/app", "other")
    assert dated.value.retry_after == 10


@pytest.mark.django_db
@pytest.mark.parametrize("reference", ["../../../../etc/passwd", "sha256:zz", "a/b", "\x00", "%2e%2e"])
def test_only_tags_and_digests_are_ever_requested(reference: str, fake_registry: FakeRegistry) -> None:
    client = make_client()
    with pytest.raises(UnsafeReferenceError):
        client.get_manifest(fake_registry.host, "library/app", reference)
    with pytest.raises(UnsafeReferenceError):
        client.get_blob(fake_registry.host, "library/app", reference)
    with pytest.raises(UnsafeReferenceError):
        client.head_manifest(ImageReference(fake_registry.host, "library/app", reference, None))
    assert fake_registry.requests == []


@pytest.mark.django_db
def test_tags_are_listed_and_an_unknown_repository_named(
    anonymous_image: PushedImage, fake_registry: FakeRegistry
) -> None:
    client = make_client()
    assert client.list_tags(anonymous_image.registry.host, "library/busybox", page={"n": "10"}) == (["latest"], None)
    fake_registry.answers["/v2/library/none/tags/list"] = (404, {})
    with pytest.raises(RepositoryUnknownError, match=f"Repository '{fake_registry.host}/library/none' not found"):
        client.list_tags(fake_registry.host, "library/none", page={})


# --- login (`/validate-creds`) -----------------------------------------------------------------------


def fixture_login(image: PushedImage) -> Credentials:
    """The registry fixture's own user and password."""
    username, password = image.registry.username, image.registry.password
    assert username is not None
    assert password is not None
    return Credentials(username, password)


@pytest.mark.django_db
@pytest.mark.parametrize("fixture_name", ["basic_image", "token_image"])
def test_login_accepts_the_right_password_only(fixture_name: str, request: pytest.FixtureRequest) -> None:
    image: PushedImage = request.getfixturevalue(fixture_name)
    registry = image.registry
    right = fixture_login(image)
    client = make_client()
    assert client.login(registry.host, right) is True
    assert client.login(registry.host, Credentials(right.username, "not-the-password")) is False
    assert client.login(registry.host, Credentials("nobody", right.password)) is False


@pytest.mark.django_db
def test_login_asks_the_token_service_for_no_scope_and_caches_nothing(token_image: PushedImage) -> None:
    registry = token_image.registry
    server = registry.token_server
    assert server is not None
    client = make_client()
    server.requests.clear()
    assert client.login(registry.host, fixture_login(token_image)) is True
    assert [(r.username, r.scopes) for r in server.requests] == [(registry.username, [])]  # as `docker login` asks
    assert caches["default"].keys("wave:registry:*") == []  # no token, no challenge kept
    client.login(registry.host, fixture_login(token_image))
    assert len(server.requests) == 2  # each login asks afresh


@pytest.mark.django_db
def test_an_open_registry_accepts_any_login(anonymous_image: PushedImage) -> None:
    assert make_client().login(anonymous_image.registry.host, Credentials("anyone", "anything")) is True


@pytest.mark.django_db
def test_login_at_a_failing_or_unreachable_registry_is_no_verdict(fake_registry: FakeRegistry) -> None:
    fake_registry.answers["/v2/"] = (503, {})
    with pytest.raises(RegistryUnavailableError, match=rf"^Registry '{fake_registry.host}' answered 503 to /v2/$"):
        make_client().login(fake_registry.host, Credentials("user", "s3cret-pw"))
    assert fake_registry.requests.count(("GET", "/v2/")) == 3  # retried twice
    fake_registry.answers["/v2/"] = (429, {"Retry-After": "12"})
    with pytest.raises(RegistryRateLimitedError) as limited:
        make_client().login(fake_registry.host, Credentials("user", "s3cret-pw"))
    assert limited.value.retry_after == 12
    with pytest.raises(RegistryUnavailableError, match="is unreachable: ConnectError"):
        make_client().login(f"127.0.0.1:{free_port()}", Credentials("user", "s3cret-pw"))


@pytest.mark.django_db
def test_login_where_no_registry_answers_says_so(fake_registry: FakeRegistry) -> None:
    fake_registry.answers["/v2/"] = (404, {})
    with pytest.raises(RegistryError) as error:
        make_client().login(fake_registry.host, Credentials("user", "s3cret-pw"))
    assert type(error.value) is RegistryError
    assert error.value.message == f"Registry '{fake_registry.host}' answered 404 to /v2/"


@pytest.mark.django_db
def test_login_checks_the_registry_and_its_token_realm_before_connecting(token_image: PushedImage) -> None:
    registry = token_image.registry
    server = registry.token_server
    assert server is not None
    refused: list[str] = []

    def check(authority: str) -> None:
        if authority == f"127.0.0.1:{server.port}":
            refused.append(authority)
            raise DestinationRefusedError("127.0.0.1", "it resolves to a private or local address")

    client = RegistryClient(insecure=INSECURE, credentials=lambda host: None, cache=caches["default"], backoff=0.01,
                            check_destination=check)  # fmt: skip
    server.requests.clear()
    with pytest.raises(DestinationRefusedError):
        client.login(registry.host, fixture_login(token_image))
    assert refused == [f"127.0.0.1:{server.port}"]
    assert server.requests == []  # the password never left for a refused realm


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("realm", "token_answer", "outcome"),
    [
        ("http://{host}/token", (403, {}), False),
        ("http://{host}/token", (200, {}), "Token service of registry '{host}' sent no token"),
        ("http://{host}/token", (500, {}), "Registry '{host}' answered 500 to the token request"),
        ("ftp://{host}/token", (200, {}), "Registry '{host}' names an invalid token realm"),
        ("http://user:pw@{host}/token", (200, {}), "Registry '{host}' names an invalid token realm"),
        ("http://127.0.0.1:{free}/token", (200, {}), "Token service of registry '{host}' is unreachable: ConnectError"),
    ],
)
def test_login_at_a_token_service_that_misbehaves(
    realm: str, token_answer: tuple[int, dict[str, str]], outcome: bool | str, fake_registry: FakeRegistry
) -> None:
    host = fake_registry.host
    challenge = f'Bearer realm="{realm.format(host=host, free=free_port())}",service="fake"'
    fake_registry.answers["/v2/"] = (401, {"WWW-Authenticate": challenge})
    fake_registry.answers["/token"] = token_answer
    client = make_client()
    if isinstance(outcome, bool):
        assert client.login(host, Credentials("user", "s3cret-pw")) is outcome
        assert ("GET", "/token?service=fake") in fake_registry.requests
    else:
        with pytest.raises(RegistryUnavailableError) as error:
            client.login(host, Credentials("user", "s3cret-pw"))
        assert error.value.message == outcome.format(host=host)


def sealing_client(image: PushedImage, fernet: Fernet) -> RegistryClient:
    def unseal(value: str) -> str | None:
        try:
            return fernet.decrypt(value.encode()).decode()
        except InvalidToken:
            return None

    client = make_client(image)
    client.seal, client.unseal = (lambda token: fernet.encrypt(token.encode()).decode()), unseal
    return client


def pulls_with(image: PushedImage, token: str) -> bool:
    url = f"{image.registry.url}/v2/{image.repository}/manifests/{image.tag}"
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/vnd.docker.distribution.manifest.v2+json"}
    return httpx.get(url, headers=headers, timeout=10).status_code == 200


@pytest.mark.django_db
def test_tokens_obtained_with_credentials_are_cached_sealed_and_reused(token_image: PushedImage) -> None:
    server = token_image.registry.token_server
    assert server is not None
    fernet = Fernet(Fernet.generate_key())
    client = sealing_client(token_image, fernet)
    ref = parse_image(token_image.reference)
    server.requests.clear()
    authorization = client.authorization(ref.registry, ref.repository)
    assert authorization is not None
    token = authorization.removeprefix("Bearer ")
    cached = client.cache.get(token_key(ref.registry, ref.repository, client.identity(ref.registry)))
    assert isinstance(cached, str)
    assert token not in cached
    assert fernet.decrypt(cached.encode()).decode() == token
    assert not pulls_with(token_image, cached)  # what the cache holds pulls nothing
    assert pulls_with(token_image, token)
    assert client.head_manifest(ref).digest == token_image.digest
    assert len(server.requests) == 1  # the sealed token was unsealed and reused


@pytest.mark.django_db
@pytest.mark.parametrize("stored", ["garbage", "plain"])
def test_a_cached_token_that_does_not_unseal_is_a_miss(token_image: PushedImage, stored: str) -> None:
    """A value sealed under another key (rotated), garbage, or a plain token cached before sealing: fetched anew."""
    server = token_image.registry.token_server
    assert server is not None
    fernet = Fernet(Fernet.generate_key())
    client = sealing_client(token_image, fernet)
    ref = parse_image(token_image.reference)
    key = token_key(ref.registry, ref.repository, client.identity(ref.registry))
    plain = make_client(token_image).authorization(ref.registry, ref.repository)  # an unsealing client's cache
    assert plain is not None
    if stored == "garbage":
        client.cache.set(key, Fernet(Fernet.generate_key()).encrypt(b"token").decode(), 300)
    assert isinstance(client.cache.get(key), str)
    server.requests.clear()
    assert client.head_manifest(ref).digest == token_image.digest
    assert len(server.requests) == 1
    cached = client.cache.get(key)
    assert isinstance(cached, str)
    assert fernet.decrypt(cached.encode())  # replaced by a sealed one


@pytest.mark.django_db
def test_anonymous_tokens_are_cached_as_they_are(token_image: PushedImage) -> None:
    fernet = Fernet(Fernet.generate_key())
    anonymous = sealing_client(token_image, fernet).for_credentials(lambda host: None)
    ref = parse_image(token_image.reference)
    authorization = anonymous.authorization(ref.registry, ref.repository)
    assert authorization is not None
    assert anonymous.cache.get(token_key(ref.registry, ref.repository, "anonymous")) == authorization.removeprefix(
        "Bearer "
    )
