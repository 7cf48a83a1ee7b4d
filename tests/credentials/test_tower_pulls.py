"""End to end: container requests with a Tower token for private images, pulled with skopeo through the proxy.

The service runs live (uvicorn in this process, a worker); Tower is the stand-in, paired with the service;
the registries are real `docker-registry` fixtures with Basic and token auth.
"""

from __future__ import annotations

import datetime as dt
import json
import logging

import httpx
import pytest
from django.test import Client
from django.utils import timezone
from pytest_django.fixtures import Settings

from credentials.callers import tower_user_key
from credentials.models import CredentialLookup, TowerAuth
from credentials.sessions import tower_session_open
from requests_app.models import ContainerRequest
from tests.conftest import PushedImage
from tests.support.asgi_server import AsgiServer
from tests.support.images import skopeo_copy, skopeo_inspect
from tests.support.tower import TowerStandIn, TowerUser
from wave_site.cache import shared_cache

pytestmark = pytest.mark.slow

NOT_AUTHORIZED = "Container image '{image}' does not exist or access is not authorized"


def request_container(proxy: AsgiServer, tower: TowerStandIn, image: str, access_token: str | None, **extra: object
                      ) -> httpx.Response:  # fmt: skip
    body: dict[str, object] = {"containerImage": image, **extra}
    if access_token is not None:
        body |= {"towerAccessToken": access_token, "towerEndpoint": tower.url}
    return httpx.post(f"{proxy.url}/container-token", json=body, timeout=60)


def stored_request_without_check(image: PushedImage, *, auth: TowerAuth | None, user: TowerUser | None) -> str:
    """A request row as one accepted earlier would be (its caller's access may have changed since): its target."""
    token = f"{ContainerRequest.objects.count() + 1:012x}"
    now = timezone.now()
    ContainerRequest.objects.create(
        token=token, source_image=image.reference, target_image="", created_at=now,
        expires_at=now + dt.timedelta(hours=1), tower_auth=auth, tower_endpoint=auth.endpoint if auth else "",
        user_id=user.id if user else None, user_name=user.user_name if user else "",
    )  # fmt: skip
    return token


@pytest.mark.parametrize("fixture_name", ["basic_image", "token_image"])
def test_a_tower_user_pulls_a_private_image_with_their_credentials(
    fixture_name: str,
    request: pytest.FixtureRequest,
    proxy: AsgiServer,
    tower: TowerStandIn,
    tmp_path,
    caplog: pytest.LogCaptureFixture,
    admin_client: Client,
) -> None:
    caplog.set_level(logging.DEBUG)
    image: PushedImage = request.getfixturevalue(fixture_name)
    registry = image.registry
    assert registry.username
    assert registry.password
    alice = tower.add_user(11, "alice", "alice@example.org")
    tower.add_credentials(alice, name="hub", registry=None, user_name="hubuser", password="hub-password")
    wanted = tower.add_credentials(
        alice, name="fixture", registry=registry.host, user_name=registry.username, password=registry.password
    )
    access, refresh = tower.issue_tokens(alice)

    # Without a Tower token the image is private: refused when asked for ...
    anonymous = request_container(proxy, tower, image.reference, None)
    assert anonymous.status_code == 400
    assert anonymous.json() == {"message": NOT_AUTHORIZED.format(image=image.reference)}
    # ... and a pull without the caller's credentials fails with UNAUTHORIZED.
    token = stored_request_without_check(image, auth=None, user=None)
    with pytest.raises(RuntimeError, match=r"(?i)unauthorized"):
        skopeo_inspect(f"{proxy.host}/wt/{token}/{image.repository}:{image.tag}")

    answer = request_container(proxy, tower, image.reference, access, towerRefreshToken=refresh)
    assert answer.status_code == 200, answer.text
    target = answer.json()["targetImage"]
    assert skopeo_inspect(target)["Digest"] == image.digest
    skopeo_copy(target, tmp_path / "copy", transport="dir")
    copied = json.loads((tmp_path / "copy" / "manifest.json").read_text())
    assert copied == skopeo_inspect(image.reference, creds=registry.creds, raw=True)

    stored = ContainerRequest.objects.get(token=answer.json()["containerToken"])
    assert (stored.user_id, stored.user_name, stored.user_email) == (11, "alice", "alice@example.org")
    assert stored.tower_auth is not None
    assert stored.tower_endpoint == tower.url
    lookup = CredentialLookup.objects.get()  # one lookup reached Tower; every later call read the cache
    assert (lookup.registry, lookup.credentials_id, lookup.outcome) == (registry.host, wanted, "found")

    # No secret anywhere: logs, API answers, admin pages.
    secrets = [registry.password, access, refresh, "hub-password", stored.tower_auth.access_token]
    pages = [
        answer.text,
        httpx.get(f"{proxy.url}/container-token/{stored.token}").text,
        httpx.get(f"{proxy.url}/v1alpha2/container/{stored.token}").text,
    ]
    for path in (
        f"/admin/requests_app/containerrequest/{stored.pk}/change/",
        "/admin/requests_app/containerrequest/",
        "/admin/credentials/credentiallookup/",
        f"/admin/credentials/credentiallookup/{lookup.pk}/change/",
        "/admin/credentials/towerauth/",
        f"/admin/credentials/towerauth/{stored.tower_auth.pk}/change/",
    ):
        page = admin_client.get(path)
        assert page.status_code == 200, path
        pages.append(page.content.decode())
    assert "alice" in pages[3]  # the admin shows the caller
    for secret in secrets:
        assert secret not in caplog.text
        for page in pages:
            assert secret not in page


def test_two_tower_users_pull_with_their_own_credentials_and_a_third_is_refused(
    proxy: AsgiServer, tower: TowerStandIn, token_image: PushedImage, tmp_path
) -> None:
    registry = token_image.registry
    registry.add_user("alice-reg", "alice-registry-pw", {token_image.repository})
    registry.add_user("bob-reg", "bob-registry-pw", {token_image.repository})
    registry.add_user("carol-reg", "carol-registry-pw", {"library/other"})
    users = {}
    for user_id, name in ((21, "alice"), (22, "bob"), (23, "carol")):
        user = tower.add_user(user_id, name, f"{name}@example.org")
        tower.add_credentials(
            user, name="fixture", registry=registry.host, user_name=f"{name}-reg", password=f"{name}-registry-pw"
        )
        users[name] = user
    assert registry.token_server is not None

    for name in ("alice", "bob"):
        access, _ = tower.issue_tokens(users[name])
        registry.token_server.requests.clear()
        answer = request_container(proxy, tower, token_image.reference, access)
        assert answer.status_code == 200, answer.text
        skopeo_copy(answer.json()["targetImage"], tmp_path / name, transport="dir")
        # Every registry token the service asked for (upstream check, pull) was asked with this user's account.
        assert {request.username for request in registry.token_server.requests} == {f"{name}-reg"}

    # The caches are warm with alice's and bob's manifests: carol still cannot have them.
    carol_access, _ = tower.issue_tokens(users["carol"])
    refused = request_container(proxy, tower, token_image.reference, carol_access)
    assert refused.status_code == 400
    assert refused.json() == {"message": NOT_AUTHORIZED.format(image=token_image.reference)}
    # Nor through a request accepted earlier (her access was withdrawn since): the proxy asks with her credentials.
    auth = tower_session_open(endpoint=tower.url, access_token=carol_access)
    token = stored_request_without_check(token_image, auth=auth, user=users["carol"])
    with pytest.raises(RuntimeError, match=r"(?i)unauthorized|denied"):
        skopeo_inspect(f"{proxy.host}/wt/{token}/{token_image.repository}:{token_image.tag}")
    assert ContainerRequest.objects.filter(user_name="carol").count() == 1  # only the row made above


def test_an_expired_bearer_is_refreshed_once_for_the_request_and_its_pulls(
    proxy: AsgiServer, tower: TowerStandIn, basic_image: PushedImage, settings: Settings
) -> None:
    registry = basic_image.registry
    assert registry.username
    assert registry.password
    alice = tower.add_user(31, "alice", "alice@example.org")
    tower.add_credentials(alice, name="fixture", registry=registry.host, user_name=registry.username,
                          password=registry.password)  # fmt: skip
    access, refresh = tower.issue_tokens(alice)
    tower.expire(access)
    answer = request_container(proxy, tower, basic_image.reference, access, towerRefreshToken=refresh)
    assert answer.status_code == 200, answer.text
    assert tower.refreshes == 1
    # Later requests come with the original (expired) token: the refreshed one is used, no new refresh.
    shared_cache().delete_pattern("wave:tower:*")
    again = request_container(proxy, tower, basic_image.reference, access, towerRefreshToken=refresh)
    assert again.status_code == 200, again.text
    assert skopeo_inspect(again.json()["targetImage"])["Digest"] == basic_image.digest
    assert tower.refreshes == 1
    assert TowerAuth.objects.get().refreshes == 1


def test_workspace_scoping_and_refused_tokens(proxy: AsgiServer, tower: TowerStandIn, basic_image: PushedImage) -> None:
    registry = basic_image.registry
    assert registry.username
    assert registry.password
    alice = tower.add_user(41, "alice", "alice@example.org")
    tower.add_credentials(alice, workspace_id=7, name="team", registry=registry.host, user_name=registry.username,
                          password=registry.password)  # fmt: skip
    access, _ = tower.issue_tokens(alice)
    assert request_container(proxy, tower, basic_image.reference, access, towerWorkspaceId=7).status_code == 200
    personal = request_container(proxy, tower, basic_image.reference, access)
    assert personal.status_code == 400
    assert personal.json() == {"message": NOT_AUTHORIZED.format(image=basic_image.reference)}
    foreign = request_container(proxy, tower, basic_image.reference, access, towerWorkspaceId=8)
    assert foreign.status_code == 400
    assert foreign.json() == {"message": "Tower user 'alice' may not read the credentials of workspace 8"}
    unknown = request_container(proxy, tower, basic_image.reference, "not-a-token")
    assert unknown.status_code == 401
    assert unknown.json()["message"].startswith("Tower access token refused")
    unpaired = httpx.post(f"{proxy.url}/container-token", json={
        "containerImage": basic_image.reference, "towerAccessToken": access,
        "towerEndpoint": tower.url + "/elsewhere"}, timeout=30)  # fmt: skip
    assert unpaired.status_code == 400
    assert unpaired.json() == {"message": f"Missing pairing record for Tower endpoint '{tower.url}/elsewhere'"}
    assert ContainerRequest.objects.count() == 1  # only the accepted one


def test_pulls_count_against_the_tower_user(
    proxy: AsgiServer, tower: TowerStandIn, basic_image: PushedImage, settings: Settings
) -> None:
    registry = basic_image.registry
    assert registry.username
    assert registry.password
    alice = tower.add_user(51, "alice", "alice@example.org")
    tower.add_credentials(alice, name="fixture", registry=registry.host, user_name=registry.username,
                          password=registry.password)  # fmt: skip
    access, _ = tower.issue_tokens(alice)
    target = request_container(proxy, tower, basic_image.reference, access).json()["targetImage"]
    settings.WAVE_RATE_LIMIT_PULLS_PER_MINUTE = 2
    _host, _, path = target.partition("/")
    repository, _, tag = path.rpartition(":")
    url = f"{proxy.url}/v2/{repository}/manifests/{tag}"
    statuses = [httpx.get(url, timeout=30).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert shared_cache().keys(f"wave:ratelimit:pull:{tower_user_key(tower.url, 51)}:*")
    assert not shared_cache().keys("wave:ratelimit:pull:ip:*")
