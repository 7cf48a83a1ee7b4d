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
from builds.services import BuildRequest, build_claim, build_create_or_join, build_finish, exists_key
from credentials.callers import Caller
from credentials.models import TowerAuth
from credentials.sessions import TowerContext
from registry.client import Credentials
from tests.conftest import PushedImage
from wave_site.cache import shared_cache

ENDPOINT = "https://tower.example.org/api"


# Findings of the attack pass still open (README, closing note): strict, so that a fix must remove the mark.
OPEN_TENANCY = (
    "open finding (Wave behaves the same): joining a build or a cached answer does not check that the caller "
    "may pull its FROM images"
)


def tower_of(name: str, user_id: int) -> tuple[Caller, TowerContext]:
    auth = TowerAuth.objects.create(key=name[0] * 64, endpoint=ENDPOINT, user_id=user_id, user_name=name)
    caller = Caller(ip="192.0.2.7", user_id=user_id, user_name=name, tower_endpoint=ENDPOINT)
    return caller, TowerContext(auth_id=auth.pk, endpoint=ENDPOINT, workspace_id=None, user_id=user_id,
                                user_name=name)  # fmt: skip


@pytest.mark.django_db
@pytest.mark.xfail(
    strict=True,
    reason=OPEN_TENANCY,
)
def test_attack_a_caller_without_access_to_the_private_from_image_gets_the_build_of_one_with_access(
    basic_image: PushedImage,
) -> None:
    """HIGH (design; Wave behaves the same). containerId hashes the Containerfile, platform, repository and
    context - not whose credentials pulled the `FROM` image. Alice (Tower credentials for a private registry)
    asks for `FROM <private>/app`; Bob, who has no access there, sends the same Containerfile and joins her
    build (or, once pushed, is answered `cached`): his token then pulls the built image - the private base
    layers included - with the service's credentials. Nothing asks whether Bob may read the base.
    Suggested policy: before joining or answering `cached`, check that the caller can read every image the
    Containerfile names (a HEAD with the caller's own credentials lookup, anonymous when none; 403 naming the
    image otherwise); or put the credential scope (Tower endpoint + user/workspace) in the containerId of any
    build whose `FROM` hosts needed credentials, so that tenants never share such targets."""
    repository = f"{basic_image.registry.host}/wave/build"
    alice, alice_tower = tower_of("alice", 51)
    bob, bob_tower = tower_of("bob", 52)
    request = BuildRequest(
        container_file=f"FROM {basic_image.reference}\nRUN true\n", platform="linux/amd64", repository=repository
    )
    first = build_create_or_join(request=request, caller=alice, tower=alice_tower, before_start=lambda: None)
    assert first.started

    second = build_create_or_join(request=request, caller=bob, tower=bob_tower, before_start=lambda: None)

    assert second.build_id != first.build_id, "bob joined alice's build of her private base image"


@pytest.mark.django_db
@pytest.mark.xfail(
    strict=True,
    reason=OPEN_TENANCY,
)
def test_attack_a_cached_answer_serves_the_image_built_with_another_callers_credentials(
    basic_image: PushedImage,
) -> None:
    """The `cached` side of the finding above: once alice's build succeeded, bob's identical request is
    answered `cached: true` with her build id - no check of his access to the base image."""
    repository = f"{basic_image.registry.host}/wave/build"
    alice, alice_tower = tower_of("alice", 51)
    bob, bob_tower = tower_of("bob", 52)
    request = BuildRequest(
        container_file=f"FROM {basic_image.reference}\nRUN true\n", platform="linux/amd64", repository=repository
    )
    built = build_create_or_join(request=request, caller=alice, tower=alice_tower, before_start=lambda: None).build
    assert built is not None
    claim = build_claim(build_pk=built.pk)
    assert claim is not None
    assert build_finish(build_pk=built.pk, claim=claim, succeeded=True, digest="sha256:" + "0" * 64)
    shared_cache().set(exists_key(request.target), True, 60)  # the push happened (as build_finish records it)

    answer = build_create_or_join(request=request, caller=bob, tower=bob_tower, before_start=lambda: None)

    assert Build.objects.get(pk=built.pk).tower_auth_id == alice_tower.auth_id  # built with her credentials
    assert not (answer.cached and answer.build_id == built.build_id), "bob was served alice's built image"


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
