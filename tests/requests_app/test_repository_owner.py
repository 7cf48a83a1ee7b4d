"""Whose repository a request may push to: the refusals say what the caller can do instead, per kind of request."""

from __future__ import annotations

import base64

import pytest
from django.test import Client
from pytest_django.fixtures import Settings

from builds.models import Build
from requests_app.models import ContainerRequest
from tests.conftest import PushedImage

TOWER = "send a towerAccessToken to push to a repository of your own, on another registry than the service's, with your credentials"  # noqa: E501


@pytest.fixture
def own_repository(settings: Settings, anonymous_image: PushedImage) -> str:
    settings.WAVE_BUILD_REPO = f"{anonymous_image.registry.host}/wave/build"
    return settings.WAVE_BUILD_REPO


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("extra", "offer"),
    [
        ({}, "leave it out to use the service's ({own}), or "),  # a build: the service's repository by default
        ({"freeze": True}, "name the service's ({own}), or "),  # freeze needs one: the service's will do
        ({"mirror": True}, ""),  # a mirror never goes to the service's repository
    ],
)
def test_an_anonymous_caller_naming_a_foreign_repository_is_told_what_to_do_instead(
    client: Client, anonymous_image: PushedImage, basic_image: PushedImage, own_repository: str,
    extra: dict[str, object], offer: str,
) -> None:  # fmt: skip
    foreign = f"{basic_image.registry.host}/someone/else"  # another registry (resolvable here, SSRF-allowed)
    body: dict[str, object] = {"buildRepository": foreign, **extra}
    if extra.get("mirror"):
        body["containerImage"] = anonymous_image.reference
    else:
        body["containerFile"] = base64.b64encode(f"FROM {anonymous_image.reference}\n".encode()).decode()

    answer = client.post("/v1alpha2/container", body, content_type="application/json")

    assert answer.status_code == 400, answer.content
    expected = f"Container build repository '{foreign}' is not allowed - {offer.format(own=own_repository)}{TOWER}"
    assert answer.json() == {"message": expected}
    assert (Build.objects.count(), ContainerRequest.objects.count()) == (0, 0)
