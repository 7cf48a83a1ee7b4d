"""Tower lookups against the Tower stand-in: the client, sessions and refreshes, the credentials lookup and
its cache, and the precedence of credentials (credentials.tower, sessions, lookups, provider)."""

from __future__ import annotations

import base64
import json
import logging
import socket
import threading
from collections.abc import Iterator

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.core.cache import cache
from pytest_django.fixtures import Settings

from credentials.callers import tower_user_key
from credentials.lookups import (
    CredentialsRefused,
    CredentialsUnavailable,
    lookup_key,
    registry_host,
    tower_registry_credentials,
)
from credentials.models import CredentialLookup, PairingKey, RegistryCredential, TowerAuth
from credentials.provider import admin_credentials_forget, credentials_lookup, service_credentials
from credentials.sessions import (
    TowerContext,
    tower_caller_identify,
    tower_client,
    tower_session_open,
    tower_user_identify,
)
from credentials.tower import TowerClient, TowerNotFound, TowerTokens, TowerUnauthorized, TowerUnavailable
from registry.client import Credentials
from tests.support.tower import TowerStandIn, TowerUser
from wave_site.errors import InvalidRequest, NotAuthenticated, TemporarilyUnavailable

pytestmark = pytest.mark.django_db

REGISTRY = "registry.example.org:5000"


def context_for(tower: TowerStandIn, user: TowerUser, *, workspace_id: int | None = None) -> TowerContext:
    access, refresh = tower.issue_tokens(user)
    auth = tower_session_open(endpoint=tower.url, access_token=access, refresh_token=refresh)
    return TowerContext(
        auth_id=auth.pk, endpoint=tower.url, workspace_id=workspace_id, user_id=user.id, user_name=user.user_name
    )


@pytest.fixture
def alice(tower: TowerStandIn) -> TowerUser:
    return tower.add_user(11, "alice", "alice@example.org")


# --- the client --------------------------------------------------------------------------------------


def test_user_info_and_the_endpoint_taken_as_given(tower: TowerStandIn, alice: TowerUser) -> None:
    access, _ = tower.issue_tokens(alice)
    user = tower_client().user_info(tower.url, TowerTokens(access_token=access))
    assert (user.id, user.user_name, user.email) == (11, "alice", "alice@example.org")
    # The endpoint's own path (/api) is kept; the client adds only the API path.
    assert [(r.method, r.path) for r in tower.requests] == [("GET", "/user-info")]


def test_an_expired_token_without_refresh_is_unauthorized(tower: TowerStandIn, alice: TowerUser) -> None:
    access, _ = tower.issue_tokens(alice)
    tower.expire(access)
    with pytest.raises(TowerUnauthorized):
        tower_client().user_info(tower.url, TowerTokens(access_token=access))
    assert tower.refreshes == 0


def test_a_refresh_on_401_through_cookies_then_one_retry(tower: TowerStandIn, alice: TowerUser) -> None:
    access, refresh = tower.issue_tokens(alice)
    tower.expire(access)
    tokens = TowerTokens(access_token=access, refresh_token=refresh)
    refreshed: list[TowerTokens] = []
    user = tower_client().user_info(tower.url, tokens, on_refresh=refreshed.append)
    assert user.id == 11
    assert tower.refreshes == 1
    assert refreshed == [tokens]
    assert tokens.access_token != access
    assert tokens.refresh_token != refresh
    assert [(r.method, r.path) for r in tower.requests] == [
        ("GET", "/user-info"),
        ("POST", "/oauth/access_token"),
        ("GET", "/user-info"),
    ]
    refresh_call = tower.requests[1]
    assert refresh_call.form == {"grant_type": "refresh_token", "refresh_token": refresh}


def test_a_refused_refresh_is_unauthorized(tower: TowerStandIn, alice: TowerUser) -> None:
    access, _ = tower.issue_tokens(alice)
    tower.expire(access)
    with pytest.raises(TowerUnauthorized):
        tower_client().user_info(tower.url, TowerTokens(access_token=access, refresh_token="not-a-refresh-token"))


def test_network_errors_and_5xx_are_retried_a_bounded_number_of_times(tower: TowerStandIn, alice: TowerUser) -> None:
    access, _ = tower.issue_tokens(alice)
    client = TowerClient(http=httpx.Client(timeout=2), retries=2, backoff=0.01)
    tower.fail_next(2, drop=True)
    assert client.user_info(tower.url, TowerTokens(access_token=access)).id == 11
    tower.fail_next(2, status=502)
    assert client.user_info(tower.url, TowerTokens(access_token=access)).id == 11
    tower.clear_requests()
    tower.fail_next(5, drop=True)
    with pytest.raises(TowerUnavailable, match="unreachable"):
        client.user_info(tower.url, TowerTokens(access_token=access))
    assert len(tower.requests) == 3  # the first try and two retries, no more


def test_a_tower_that_never_answers_times_out() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True).start()
    client = TowerClient(http=httpx.Client(timeout=httpx.Timeout(0.5)), retries=0)
    try:
        with pytest.raises(TowerUnavailable, match="ReadTimeout"):
            client.user_info(f"http://127.0.0.1:{listener.getsockname()[1]}", TowerTokens(access_token="x"))
    finally:
        listener.close()
        for connection in accepted:
            connection.close()


def test_unknown_credentials_are_not_found(tower: TowerStandIn, alice: TowerUser) -> None:
    access, _ = tower.issue_tokens(alice)
    key = PairingKey.objects.get()
    with pytest.raises(TowerNotFound):
        tower_client().credential_keys(
            tower.url, TowerTokens(access_token=access), credentials_id="nope", pairing_id=key.pairing_id,
            workspace_id=None,
        )  # fmt: skip
    with pytest.raises(TowerNotFound, match="invalid id"):  # never put in a URL
        tower_client().credential_keys(
            tower.url, TowerTokens(access_token=access), credentials_id="../user-info", pairing_id=key.pairing_id,
            workspace_id=None,
        )  # fmt: skip


# --- sessions ----------------------------------------------------------------------------------------


def test_a_refreshed_session_is_reused_by_later_calls_with_the_original_token(
    tower: TowerStandIn, alice: TowerUser
) -> None:
    access, refresh = tower.issue_tokens(alice)
    tower.expire(access)
    first = tower_session_open(endpoint=tower.url, access_token=access, refresh_token=refresh)
    assert tower_user_identify(auth=first).id == 11
    assert tower.refreshes == 1
    stored = TowerAuth.objects.get()
    assert (stored.refreshes, stored.user_id, stored.user_name) == (1, 11, "alice")
    assert stored.access_token != access  # the refreshed token, sealed at rest
    assert access not in stored.access_token_sealed
    assert refresh not in stored.refresh_token_sealed
    # A later request arrives with the original (expired) token: the stored, refreshed one is used.
    tower.clear_requests()
    again = tower_session_open(endpoint=tower.url, access_token=access, refresh_token=refresh)
    assert again.pk == first.pk
    assert tower_user_identify(auth=again).id == 11
    assert tower.refreshes == 1
    assert [(r.method, r.path) for r in tower.requests] == [("GET", "/user-info")]


def test_a_session_refreshed_by_another_process_is_picked_up(tower: TowerStandIn, alice: TowerUser) -> None:
    access, refresh = tower.issue_tokens(alice)
    tower.expire(access)
    mine = tower_session_open(endpoint=tower.url, access_token=access, refresh_token=refresh)
    theirs = TowerAuth.objects.get(pk=mine.pk)
    assert tower_user_identify(auth=theirs).id == 11  # the other process refreshed (refresh tokens are single use)
    assert tower_user_identify(auth=mine).id == 11  # ours is refused, so the stored pair is used
    assert tower.refreshes == 1


def test_caller_identification(tower: TowerStandIn, alice: TowerUser, settings: Settings) -> None:
    access, _ = tower.issue_tokens(alice)
    caller, context = tower_caller_identify(ip="192.0.2.1", endpoint=tower.url, workspace_id=7, access_token=access)
    assert (caller.user_id, caller.user_name, caller.email, caller.rate_limit_key) == (
        11, "alice", "alice@example.org", tower_user_key(tower.url, 11),
    )  # fmt: skip
    assert (context.endpoint, context.workspace_id, context.user_id) == (tower.url, 7, 11)
    # user-info is remembered briefly: the next request with the token asks Tower nothing.
    tower.clear_requests()
    tower_caller_identify(ip="192.0.2.1", endpoint=tower.url, workspace_id=7, access_token=access)
    assert tower.requests == []


def test_caller_identification_failures(tower: TowerStandIn, alice: TowerUser, settings: Settings) -> None:
    with pytest.raises(NotAuthenticated, match="Tower access token refused"):
        tower_caller_identify(ip=None, endpoint=tower.url, workspace_id=None, access_token="unknown")
    unpaired = tower.url.replace("/api", "/other")
    with pytest.raises(InvalidRequest) as missing:
        tower_caller_identify(ip=None, endpoint=unpaired, workspace_id=None, access_token="x")
    assert missing.value.message == f"Missing pairing record for Tower endpoint '{unpaired}'"
    tower.fail_next(10, status=503)
    access, _ = tower.issue_tokens(alice)
    with pytest.raises(TemporarilyUnavailable):
        tower_caller_identify(ip=None, endpoint=tower.url, workspace_id=None, access_token=access)
    settings.WAVE_SSRF_ALLOW = []
    with pytest.raises(InvalidRequest, match="not allowed"):
        tower_caller_identify(ip=None, endpoint=tower.url, workspace_id=None, access_token=access)


# --- lookups -----------------------------------------------------------------------------------------


def test_the_first_container_registry_entry_of_the_host_is_used(tower: TowerStandIn, alice: TowerUser) -> None:
    tower.add_credentials(alice, name="aws", registry=None, user_name="AKIA", password="aws-secret", provider="aws")
    tower.add_credentials(alice, name="other", registry="quay.io", user_name="q", password="quay-secret")
    wanted = tower.add_credentials(alice, name="mine", registry=REGISTRY, user_name="al", password="first-secret")
    tower.add_credentials(alice, name="later", registry=REGISTRY, user_name="al2", password="second-secret")
    context = context_for(tower, alice)
    assert tower_registry_credentials(context=context, registry=REGISTRY) == Credentials("al", "first-secret")
    lookup = CredentialLookup.objects.get()
    assert (lookup.registry, lookup.credentials_id, lookup.outcome, lookup.user_id) == (REGISTRY, wanted, "found", 11)
    assert lookup.endpoint == tower.url
    keys_call = tower.requests[-1]
    assert keys_call.path == f"/credentials/{wanted}/keys"
    assert keys_call.query == {"pairingId": str(PairingKey.objects.get().pairing_id)}


def test_an_entry_without_registry_is_docker_hub(tower: TowerStandIn, alice: TowerUser) -> None:
    tower.add_credentials(alice, name="hub", registry=None, user_name="hubuser", password="hub-secret")
    context = context_for(tower, alice)
    assert tower_registry_credentials(context=context, registry="docker.io") == Credentials("hubuser", "hub-secret")
    assert tower_registry_credentials(context=context, registry=REGISTRY) is None
    assert list(CredentialLookup.objects.order_by("pk").values_list("registry", "outcome")) == [
        ("docker.io", "found"),
        (REGISTRY, "not-found"),
    ]
    assert registry_host("index.docker.io") == registry_host("https://registry-1.docker.io/v1/") == "docker.io"


def test_workspace_scoping(tower: TowerStandIn, alice: TowerUser) -> None:
    tower.add_credentials(alice, workspace_id=7, name="team", registry=REGISTRY, user_name="team", password="ws-secret")
    assert tower_registry_credentials(context=context_for(tower, alice, workspace_id=7), registry=REGISTRY) == (
        Credentials("team", "ws-secret")
    )
    # The personal workspace does not see the team's credentials, and another workspace is refused.
    assert tower_registry_credentials(context=context_for(tower, alice), registry=REGISTRY) is None
    with pytest.raises(CredentialsRefused, match="may not read the credentials of workspace 8"):
        tower_registry_credentials(context=context_for(tower, alice, workspace_id=8), registry=REGISTRY)
    assert CredentialLookup.objects.filter(outcome="error", workspace_id=8).count() == 1


def test_lookups_are_cached_sealed_and_errors_are_not(tower: TowerStandIn, alice: TowerUser) -> None:
    tower.add_credentials(alice, name="mine", registry=REGISTRY, user_name="al", password="cached-secret")
    context = context_for(tower, alice)
    tower.fail_next(5, status=503)
    with pytest.raises(CredentialsUnavailable):
        tower_registry_credentials(context=context, registry=REGISTRY)
    assert cache.get(lookup_key(context, REGISTRY)) is None  # a failure is not cached
    tower.fail_next(0, status=503)
    assert tower_registry_credentials(context=context, registry=REGISTRY) == Credentials("al", "cached-secret")
    tower.clear_requests()
    assert tower_registry_credentials(context=context, registry=REGISTRY) == Credentials("al", "cached-secret")
    assert tower.requests == []  # from the cache
    raw = cache.get(lookup_key(context, REGISTRY))
    assert isinstance(raw, str)
    assert "cached-secret" not in raw
    assert list(CredentialLookup.objects.order_by("pk").values_list("outcome", flat=True)) == ["error", "found"]


def test_an_expired_bearer_is_refreshed_once_and_the_lookup_succeeds(tower: TowerStandIn, alice: TowerUser) -> None:
    tower.add_credentials(alice, name="mine", registry=REGISTRY, user_name="al", password="refresh-secret")
    access, refresh = tower.issue_tokens(alice)
    tower.expire(access)
    auth = tower_session_open(endpoint=tower.url, access_token=access, refresh_token=refresh)
    context = TowerContext(auth_id=auth.pk, endpoint=tower.url, workspace_id=None, user_id=11, user_name="alice")
    assert tower_registry_credentials(context=context, registry=REGISTRY) == Credentials("al", "refresh-secret")
    assert tower.refreshes == 1
    assert [r.path for r in tower.requests] == [
        "/credentials", "/oauth/access_token", "/credentials", tower.requests[-1].path,
    ]  # fmt: skip


def test_a_missing_pairing_fails_the_lookup(tower: TowerStandIn, alice: TowerUser) -> None:
    tower.add_credentials(alice, name="mine", registry=REGISTRY, user_name="al", password="x-secret")
    context = context_for(tower, alice)
    PairingKey.objects.all().delete()
    with pytest.raises(CredentialsRefused, match="Missing pairing record"):
        tower_registry_credentials(context=context, registry=REGISTRY)


def test_a_packet_for_another_key_is_refused(tower: TowerStandIn, alice: TowerUser) -> None:
    tower.add_credentials(alice, name="mine", registry=REGISTRY, user_name="al", password="x-secret")
    context = context_for(tower, alice)
    other = PairingKey.objects.get()
    # Tower encrypts with a key that is not ours (it paired with another service): nothing decrypts.
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    der = stranger.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    tower.register_pairing(other.pairing_id, base64.b64encode(der).decode())
    with pytest.raises(CredentialsRefused, match="unusable"):
        tower_registry_credentials(context=context, registry=REGISTRY)
    assert CredentialLookup.objects.get().outcome == "error"


def test_no_secret_in_logs_or_lookup_rows(
    tower: TowerStandIn, alice: TowerUser, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tower.add_credentials(alice, name="mine", registry=REGISTRY, user_name="al", password="log-secret-pw")
    access, refresh = tower.issue_tokens(alice)
    tower.expire(access)
    auth = tower_session_open(endpoint=tower.url, access_token=access, refresh_token=refresh)
    context = TowerContext(auth_id=auth.pk, endpoint=tower.url, workspace_id=None, user_id=11, user_name="alice")
    tower_registry_credentials(context=context, registry=REGISTRY)
    with pytest.raises(CredentialsRefused):
        tower_registry_credentials(context=context_for(tower, alice, workspace_id=99), registry=REGISTRY)
    secrets = ["log-secret-pw", access, refresh, TowerAuth.objects.get(pk=auth.pk).access_token]
    for secret in secrets:
        assert secret not in caplog.text
    rows = json.dumps(list(CredentialLookup.objects.values()), default=str)
    for secret in secrets:
        assert secret not in rows


# --- precedence ---------------------------------------------------------------------------------------


@pytest.fixture
def admin_entries() -> Iterator[None]:
    admin_credentials_forget()
    yield
    admin_credentials_forget()


def test_service_credentials_admin_entries_win_over_the_file(admin_entries: None, settings: Settings, tmp_path) -> None:
    path = tmp_path / "creds.json"
    path.write_text(json.dumps({REGISTRY: {"username": "file", "password": "file-pw"}, "quay.io": {
        "username": "fq", "password": "fq-pw"}}))  # fmt: skip
    settings.WAVE_REGISTRY_CREDENTIALS = str(path)
    assert service_credentials(REGISTRY) == Credentials("file", "file-pw")
    entry = RegistryCredential(registry=REGISTRY, username="admin")
    entry.set_password("admin-pw")
    entry.save()
    disabled = RegistryCredential(registry="quay.io", username="off", is_enabled=False)
    disabled.set_password("off-pw")
    disabled.save()
    admin_credentials_forget()
    assert service_credentials(REGISTRY) == Credentials("admin", "admin-pw")
    assert service_credentials("quay.io") == Credentials("fq", "fq-pw")  # a disabled entry does not apply
    assert service_credentials("ghcr.io") is None


def test_tower_callers_use_their_own_credentials_and_the_service_its_own_on_its_registries_as_a_fallback(
    tower: TowerStandIn, alice: TowerUser, admin_entries: None, settings: Settings
) -> None:
    settings.WAVE_BUILD_REPO = "build.example.org/wave/build"
    for host in (REGISTRY, "build.example.org"):
        entry = RegistryCredential(registry=host, username="service")
        entry.set_password("service-pw")
        entry.save()
    tower.add_credentials(alice, name="mine", registry=REGISTRY, user_name="al", password="alice-pw")
    tower.add_credentials(alice, name="build", registry="build.example.org", user_name="al", password="nope")
    tower.add_credentials(alice, name="q", registry="quay.io", user_name="al", password="alice-quay-pw")
    lookup = credentials_lookup(context_for(tower, alice))
    assert lookup(REGISTRY) == Credentials("al", "alice-pw")
    # On the build repository's registry the caller's own come first (their private images there); the service's
    # only when Tower has none.
    assert lookup("build.example.org") == Credentials("al", "nope")
    settings.WAVE_CACHE_REPO = "quay.io/wave/cache"
    bob = tower.add_user(12, "bob", "bob@example.org")
    entry = RegistryCredential(registry="quay.io", username="service")
    entry.set_password("service-quay-pw")
    entry.save()
    admin_credentials_forget()
    assert credentials_lookup(context_for(tower, bob))("quay.io") == Credentials("service", "service-quay-pw")
    assert lookup("ghcr.io") is None  # the Tower user has none: anonymous, never the service's
    tower.clear_requests()
    assert lookup(REGISTRY) == Credentials("al", "alice-pw")  # remembered for the lookup's lifetime
    assert tower.requests == []
    anonymous = credentials_lookup(None)
    assert anonymous(REGISTRY) == Credentials("service", "service-pw")


def test_a_refused_token_leaves_no_session(tower: TowerStandIn, alice: TowerUser) -> None:
    with pytest.raises(NotAuthenticated):
        tower_caller_identify(ip=None, endpoint=tower.url, workspace_id=None, access_token="refused-token")
    assert TowerAuth.objects.count() == 0
    access, refresh = tower.issue_tokens(alice)
    tower.expire(access)
    tower_caller_identify(ip=None, endpoint=tower.url, workspace_id=None, access_token=access, refresh_token=refresh)
    stored = TowerAuth.objects.get()  # saved once identified, with the refreshed tokens
    assert (stored.refreshes, stored.user_name) == (1, "alice")
    assert stored.access_token != access
