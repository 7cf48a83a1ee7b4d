"""Adversarial review of builds (issue 12): deduplication across callers whose registry credentials differ.

Each test states what the service should do and fails while it does not.
"""

from __future__ import annotations

import pytest

from builds.models import Build
from builds.services import BuildRequest, build_claim, build_create_or_join, build_finish, exists_key
from credentials.callers import Caller
from credentials.models import TowerAuth
from credentials.sessions import TowerContext
from tests.conftest import PushedImage
from wave_site.cache import shared_cache

ENDPOINT = "https://tower.example.org/api"


def tower_of(name: str, user_id: int) -> tuple[Caller, TowerContext]:
    auth = TowerAuth.objects.create(key=name[0] * 64, endpoint=ENDPOINT, user_id=user_id, user_name=name)
    caller = Caller(ip="192.0.2.7", user_id=user_id, user_name=name, tower_endpoint=ENDPOINT)
    return caller, TowerContext(auth_id=auth.pk, endpoint=ENDPOINT, workspace_id=None, user_id=user_id,
                                user_name=name)  # fmt: skip


@pytest.mark.django_db
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
