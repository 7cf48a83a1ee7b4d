"""Adversarial review of builds (issue 12): deduplication across callers whose registry credentials differ.

Each test states what the service should do and fails while it does not.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from django.test import Client
from pytest_django.fixtures import Settings

from builds.models import Build
from builds.runs import build_credentials
from builds.services import BuildAnswer, BuildRequest, build_claim, build_create_or_join, build_finish, exists_key
from credentials.callers import Caller
from credentials.sessions import TowerContext, tower_session_open
from registry.client import Credentials
from requests_app.models import ContainerRequest
from tests.conftest import PushedImage
from tests.support.tower import TowerStandIn, TowerUser
from wave_site.cache import shared_cache
from wave_site.errors import InvalidRequest

NOT_AUTHORIZED = "Container image '{image}' does not exist or access is not authorized"


def tower_caller(tower: TowerStandIn, user: TowerUser) -> tuple[Caller, TowerContext]:
    """A caller with a stored Tower session, as a request with `towerAccessToken` makes one."""
    access, _ = tower.issue_tokens(user)
    auth = tower_session_open(endpoint=tower.url, access_token=access)
    caller = Caller(ip="192.0.2.7", user_id=user.id, user_name=user.user_name, tower_endpoint=tower.url)
    context = TowerContext(auth_id=auth.pk, endpoint=tower.url, workspace_id=None, user_id=user.id,
                           user_name=user.user_name)  # fmt: skip
    return caller, context


@pytest.fixture
def tenants(tower: TowerStandIn, basic_image: PushedImage) -> dict[str, tuple[Caller, TowerContext]]:
    """alice and carol hold credentials of the private registry in their Tower workspaces; bob does not."""
    registry = basic_image.registry
    assert registry.username
    assert registry.password
    callers = {}
    for user_id, name in ((51, "alice"), (52, "bob"), (53, "carol")):
        user = tower.add_user(user_id, name, f"{name}@example.org")
        if name != "bob":
            tower.add_credentials(user, name="private", registry=registry.host, user_name=registry.username,
                                  password=registry.password)  # fmt: skip
        callers[name] = tower_caller(tower, user)
    return callers


def private_build(basic_image: PushedImage) -> BuildRequest:
    repository = f"{basic_image.registry.host}/wave/build"
    return BuildRequest(
        container_file=f"FROM {basic_image.reference}\nRUN true\n", platform="linux/amd64", repository=repository
    )


def answer_for(request: BuildRequest, tenant: tuple[Caller, TowerContext]) -> BuildAnswer:
    caller, tower = tenant
    return build_create_or_join(request=request, caller=caller, tower=tower, before_start=lambda: None)


@pytest.mark.django_db
def test_attack_a_caller_without_access_to_the_private_from_image_gets_the_build_of_one_with_access(
    basic_image: PushedImage, tenants: dict[str, tuple[Caller, TowerContext]]
) -> None:
    """HIGH (design; Wave behaves the same). containerId hashes the Containerfile, platform, repository and
    context - not whose credentials pulled the `FROM` image. Alice (Tower credentials for a private registry)
    asks for `FROM <private>/app`; Bob, who has no access there, sends the same Containerfile and joins her
    build (or, once pushed, is answered `cached`): his token then pulls the built image - the private base
    layers included - with the service's credentials. Fixed (builds.access): before joining or answering
    `cached`, a caller outside the build's credential scope must read every image the Containerfile names
    with their own credentials."""
    request = private_build(basic_image)
    first = answer_for(request, tenants["alice"])
    assert first.started

    with pytest.raises(InvalidRequest) as refused:
        answer_for(request, tenants["bob"])

    assert refused.value.message == NOT_AUTHORIZED.format(image=basic_image.reference)
    assert list(Build.objects.values_list("build_id", "user_name")) == [(first.build_id, "alice")]
    # carol reads the base image with her own credentials: she shares alice's build.
    assert answer_for(request, tenants["carol"]).build_id == first.build_id
    # So does a request of alice's again, with no new lookup (same credential scope).
    assert answer_for(request, tenants["alice"]).build_id == first.build_id


@pytest.mark.django_db
def test_attack_a_cached_answer_serves_the_image_built_with_another_callers_credentials(
    basic_image: PushedImage, tenants: dict[str, tuple[Caller, TowerContext]]
) -> None:
    """The `cached` side of the finding above: once alice's build succeeded, bob's identical request was
    answered `cached: true` with her build id - no check of his access to the base image."""
    request = private_build(basic_image)
    built = answer_for(request, tenants["alice"]).build
    assert built is not None
    claim = build_claim(build_pk=built.pk)
    assert claim is not None
    assert build_finish(build_pk=built.pk, claim=claim, succeeded=True, digest="sha256:" + "0" * 64)
    shared_cache().set(exists_key(request.target), True, 60)  # the push happened (as build_finish records it)

    with pytest.raises(InvalidRequest, match="does not exist or access is not authorized"):
        answer_for(request, tenants["bob"])
    with pytest.raises(InvalidRequest, match="does not exist or access is not authorized"):  # nor anonymous
        build_create_or_join(request=request, caller=Caller(ip="192.0.2.8"), tower=None, before_start=pytest.fail)

    assert Build.objects.get().tower_auth_id == tenants["alice"][1].auth_id  # built with her credentials
    carol = answer_for(request, tenants["carol"])
    assert (carol.cached, carol.build_id) == (True, built.build_id)


@pytest.mark.django_db
def test_a_caller_refused_the_base_image_of_a_build_stores_nothing(
    basic_image: PushedImage, tower: TowerStandIn, tenants: dict[str, tuple[Caller, TowerContext]],
    settings: Settings,
) -> None:  # fmt: skip
    """Through the API: bob's request for the build alice started is a 400 naming the image; nothing stored."""
    settings.WAVE_BUILD_REPO = f"{basic_image.registry.host}/wave/build"
    first = answer_for(private_build(basic_image), tenants["alice"])
    bob = tower.users[52]
    access, _ = tower.issue_tokens(bob)
    body = {
        "containerFile": base64.b64encode(f"FROM {basic_image.reference}\nRUN true\n".encode()).decode(),
        "towerAccessToken": access,
        "towerEndpoint": tower.url,
    }

    answer = Client().post("/v1alpha2/container", body, content_type="application/json", REMOTE_ADDR="192.0.2.9")

    assert answer.status_code == 400, answer.content
    assert answer.json() == {"message": NOT_AUTHORIZED.format(image=basic_image.reference)}
    assert list(Build.objects.values_list("build_id", flat=True)) == [first.build_id]
    assert not ContainerRequest.objects.exists()


@pytest.mark.django_db
def test_attack_any_caller_pushes_with_the_services_credentials_into_a_repository_of_their_choosing(
    anonymous_image: PushedImage, basic_image: PushedImage, settings: Settings, tmp_path: Path
) -> None:
    """HIGH. `buildRepository` and `cacheRepository` are free: any caller (anonymous here) names any repository
    on any host the SSRF rules allow, and the build pushes there - `<repo>:<containerId>` and, for the cache,
    layers - with the service's own credentials for that host (build_credentials: the service's first for the
    build and cache repositories' hosts). Credentials the operator configured to pull (Docker Hub, a private
    registry) become write access to every repository that account can write, for everyone; `target_exists`
    also answers, with those credentials, whether a tag exists in a private repository. Suggested policy:
    a requested repository must be under an allow list (WAVE_BUILD_REPO/WAVE_CACHE_REPO by default), or be
    pushed with the caller's own (Tower) credentials only - never the service's."""
    settings.WAVE_BUILD_REPO = f"{anonymous_image.registry.host}/wave/build"
    registry = basic_image.registry
    assert registry.username
    assert registry.password
    creds = tmp_path / "registry-credentials.json"
    creds.write_text(json.dumps({registry.host: {"username": registry.username, "password": registry.password}}))
    settings.WAVE_REGISTRY_CREDENTIALS = str(creds)  # the service pulls from this private registry
    other_tenant = f"{registry.host}/other-tenant/app"
    body = {
        "containerFile": base64.b64encode(f"FROM {anonymous_image.reference}\nRUN true\n".encode()).decode(),
        "buildRepository": other_tenant,
    }

    answer = Client().post("/v1alpha2/container", body, content_type="application/json", REMOTE_ADDR="192.0.2.9")

    build = Build.objects.filter(repository=other_tenant).first()
    if build is not None:  # what the worker would write into the auth file for the push
        services = build_credentials(build)(registry.host) == Credentials(registry.username, registry.password)
        assert not services, "an anonymous caller's build pushes into another repository with the service's login"
    assert answer.status_code == 400, answer.content
