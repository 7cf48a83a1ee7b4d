"""Adversarial review of Tower credentials on the pull side: rate limits, refresh races, tokens at rest, and
the service's own registries.

Each test states what the service should do and fails while it does not.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx
import pytest
from django.test import Client
from pytest_django.fixtures import Settings

from credentials.clients import registry_client
from credentials.pairing import pairing_key_register
from credentials.sessions import tower_client
from tests.conftest import PushedImage
from tests.support.asgi_server import AsgiServer
from tests.support.tower import TowerStandIn
from wave_site.cache import shared_cache


def paired_tower(tower: TowerStandIn) -> TowerStandIn:
    key = pairing_key_register(service="tower", endpoint=tower.url)
    tower.register_pairing(key.pairing_id, key.public_key)
    return tower


def ask(url: str, image: str, endpoint: str, access: str, **extra: object) -> httpx.Response:
    body = {"containerImage": image, "towerAccessToken": access, "towerEndpoint": endpoint, **extra}
    return httpx.post(f"{url}/container-token", json=body, timeout=60)


def manifest_url(proxy: AsgiServer, target_image: str) -> str:
    _host, _, path = target_image.partition("/")
    repository, _, tag = path.rpartition(":")
    return f"{proxy.url}/v2/{repository}/manifests/{tag}"


@pytest.mark.slow
def test_attack_a_hostile_tower_spends_another_towers_user_pull_limit(
    proxy: AsgiServer, anonymous_image: PushedImage, settings: Settings
) -> None:
    """Pull (and build, and layer download) limits count by `user:<Tower user id>`, whatever Tower said so.
    Anyone can pair a Tower of their own and have it claim any id: mallory's Tower says she is user 51, and
    her pulls use up the limit of alice, user 51 at the real Tower. (The same lets anyone escape the limit of
    their address by claiming a new id per request.) Keys should name the endpoint as well as the id."""
    tower_client.cache_clear()
    with TowerStandIn() as real, TowerStandIn() as hostile:
        paired_tower(real)
        paired_tower(hostile)
        alice = real.add_user(51, "alice", "alice@example.org")
        mallory = hostile.add_user(51, "mallory", "mallory@example.org")
        alice_access, _ = real.issue_tokens(alice)
        mallory_access, _ = hostile.issue_tokens(mallory)
        alice_target = ask(proxy.url, anonymous_image.reference, real.url, alice_access).json()["targetImage"]
        mallory_target = ask(proxy.url, anonymous_image.reference, hostile.url, mallory_access).json()["targetImage"]
        settings.WAVE_RATE_LIMIT_PULLS_PER_MINUTE = 2
        for _ in range(2):
            assert httpx.get(manifest_url(proxy, mallory_target), timeout=30).status_code == 200
        alice_pull = httpx.get(manifest_url(proxy, alice_target), timeout=30)
    tower_client.cache_clear()
    assert alice_pull.status_code == 200, f"alice refused after mallory's pulls: {alice_pull.text}"


class SlowRefreshTower(TowerStandIn):
    """Tower as it is over a real network: a refresh is committed (the old refresh token is spent at once)
    before its answer reaches the service."""

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        base = super()._handler()

        class Handler(base):  # type: ignore[valid-type,misc]
            def reply(self, status: int, body: dict[str, Any], cookies: list[str]) -> None:
                if cookies:  # only refresh answers set cookies
                    time.sleep(1.0)
                super().reply(status, body, cookies)

        return Handler


@pytest.mark.slow
def test_attack_two_requests_with_the_same_expired_token_both_succeed(proxy: AsgiServer, anonymous_image: PushedImage,
                                                                    ) -> None:  # fmt: skip
    """Two requests arrive with the same expired access token and its (single use) refresh token. Both get a
    401 from Tower and both refresh; Tower spends the refresh token on the first and refuses the second at once.
    The second then reads the session row for the first's new tokens, but the first has not stored them yet (its
    answer is still on the wire): the second caller is told to sign in again. The loser of a refresh should
    wait for the winner's tokens (a row lock or an advisory lock around the refresh, or a short poll)."""
    tower_client.cache_clear()
    with SlowRefreshTower() as tower:
        paired_tower(tower)
        alice = tower.add_user(61, "alice", "alice@example.org")
        access, refresh = tower.issue_tokens(alice)
        tower.expire(access)
        answers: list[httpx.Response] = []

        def one() -> None:
            answers.append(ask(proxy.url, anonymous_image.reference, tower.url, access, towerRefreshToken=refresh))

        threads = [threading.Thread(target=one) for _ in range(2)]
        for thread in threads:
            thread.start()
            time.sleep(0.2)
        for thread in threads:
            thread.join(60)
    tower_client.cache_clear()
    assert tower.refreshes == 1
    assert [answer.status_code for answer in answers] == [200, 200], [answer.text for answer in answers]


@pytest.mark.slow
def test_attack_tower_down_during_a_pull_is_unavailable_not_a_500(proxy: AsgiServer, basic_image: PushedImage) -> None:
    """Held: Tower unreachable when the proxy needs the caller's credentials (cache expired): UNAVAILABLE
    (503, Retry-After), never a 500 and never a pull without the caller's credentials."""
    registry = basic_image.registry
    assert registry.username
    assert registry.password
    tower_client.cache_clear()
    with TowerStandIn() as tower:
        paired_tower(tower)
        alice = tower.add_user(91, "alice", "alice@example.org")
        tower.add_credentials(alice, name="r", registry=registry.host, user_name=registry.username,
                              password=registry.password)  # fmt: skip
        access, _ = tower.issue_tokens(alice)
        answer = ask(proxy.url, basic_image.reference, tower.url, access)
        assert answer.status_code == 200, answer.text
    shared_cache().delete_pattern("wave:*")  # Tower's answer and every upstream answer expired
    pull = httpx.get(manifest_url(proxy, answer.json()["targetImage"]), timeout=60)
    tower_client.cache_clear()
    assert pull.status_code == 503, pull.text
    assert pull.json()["errors"][0]["code"] == "UNAVAILABLE"
    assert pull.headers.get("Retry-After")


@pytest.fixture
def tower_for(settings: Settings) -> Iterator[TowerStandIn]:
    tower_client.cache_clear()
    with TowerStandIn() as tower:
        yield paired_tower(tower)
    tower_client.cache_clear()


@pytest.mark.django_db
def test_attack_a_tower_users_registry_token_is_cached_in_plain_text(
    tower_for: TowerStandIn, token_image: PushedImage
) -> None:
    """The bearer tokens the service gets from a registry with a Tower user's password are cached as they are
    (`wave:registry:token:*`): anyone who reads Redis (a replica, a dump, a backup, a shared instance) can pull
    the user's private repository for as long as the token lives. Tower lookups are sealed in the cache; the
    registry tokens derived from them should be too."""
    registry = token_image.registry
    registry.add_user("alice-reg", "alice-registry-pw", {token_image.repository})
    alice = tower_for.add_user(71, "alice", "alice@example.org")
    tower_for.add_credentials(alice, name="r", registry=registry.host, user_name="alice-reg",
                              password="alice-registry-pw")  # fmt: skip
    access, _ = tower_for.issue_tokens(alice)
    body = {"containerImage": token_image.reference, "towerAccessToken": access, "towerEndpoint": tower_for.url}
    assert Client().post("/container-token", body, content_type="application/json").status_code == 200
    cached = [shared_cache().get(key) for key in shared_cache().keys("wave:registry:token:*")]
    base = registry_client().base_url(registry.host)
    usable = [
        value
        for value in cached
        if isinstance(value, str)
        and httpx.get(
            f"{base}/v2/{token_image.repository}/manifests/{token_image.tag}",
            headers={"Authorization": f"Bearer {value}",
                     "Accept": "application/vnd.oci.image.manifest.v1+json, "
                               "application/vnd.docker.distribution.manifest.v2+json"},
            timeout=10,
        ).status_code == 200
    ]  # fmt: skip
    count = len(usable)  # the tokens themselves stay out of the failure message
    assert count == 0, f"{count} registry token(s) read from the cache pull alice's private repository"


@pytest.mark.django_db
def test_attack_the_build_repository_host_overrides_the_callers_own_credentials(
    tower_for: TowerStandIn, basic_image: PushedImage, settings: Settings
) -> None:
    """README: "The service's own logins apply only to its build and cache repositories". The code checks the
    host (`is_own_registry`), not the repository: when the build or cache repository is on a registry (say
    docker.io or quay.io), every image on that registry is pulled with the service's credentials (or anonymously)
    for Tower users, their own credentials for it are never asked for, and their private images there cannot be
    pulled. The own credentials should apply to the own repositories (a path prefix), the caller's to the rest."""
    registry = basic_image.registry
    assert registry.username
    assert registry.password
    alice = tower_for.add_user(81, "alice", "alice@example.org")
    tower_for.add_credentials(alice, name="r", registry=registry.host, user_name=registry.username,
                              password=registry.password)  # fmt: skip
    access, _ = tower_for.issue_tokens(alice)
    body = {"containerImage": basic_image.reference, "towerAccessToken": access, "towerEndpoint": tower_for.url}
    # Control: with the build repository elsewhere, alice's own credentials pull her image.
    assert Client().post("/container-token", body, content_type="application/json").status_code == 200
    shared_cache().delete_pattern("wave:*")
    settings.WAVE_BUILD_REPO = f"{registry.host}/wave/build"  # the service has no credentials there
    answer = Client().post("/container-token", body, content_type="application/json")
    assert answer.status_code == 200, answer.content.decode()
