from __future__ import annotations

import base64

import pytest
from pytest_django.fixtures import Settings

from builds.models import Build
from requests_app.models import ContainerRequest
from requests_app.ratelimit import rate_limit_acquire
from tests.requests_app.conftest import Post
from wave_site.errors import RateLimited


def test_limits_are_off_by_default() -> None:
    from wave_site.cache import shared_cache

    for _ in range(500):
        rate_limit_acquire(kind="pull", key="ip:192.0.2.1")
        rate_limit_acquire(kind="build", key="ip:192.0.2.1")
    assert shared_cache().keys("wave:ratelimit:*") == []  # nothing counted


def test_pull_limit_per_minute_per_key(settings: Settings) -> None:
    settings.WAVE_RATE_LIMIT_PULLS_PER_MINUTE = 3
    now = 1_800_000_030.0  # 30 s into a minute
    for _ in range(3):
        rate_limit_acquire(kind="pull", key="ip:192.0.2.1", now=now)
    with pytest.raises(RateLimited) as error:
        rate_limit_acquire(kind="pull", key="ip:192.0.2.1", now=now)
    assert error.value.headers == {"Retry-After": "30"}
    assert error.value.message == "Request exceeded pull rate limit of 3 per minute - retry in 30 seconds"
    rate_limit_acquire(kind="pull", key="ip:192.0.2.2", now=now)  # another client has its own budget
    rate_limit_acquire(kind="pull", key="ip:192.0.2.1", now=now + 60)  # the next window starts afresh


def dockerfile(step: str) -> str:
    # FROM a loopback host the tests allow; the build repository (127.0.0.1:9) does not answer: nothing is cached.
    return base64.b64encode(f"FROM 127.0.0.1:9/library/busybox\nRUN {step}\n".encode()).decode()


@pytest.mark.django_db
def test_build_requests_over_the_hourly_limit_get_429(post: Post, settings: Settings) -> None:
    settings.WAVE_RATE_LIMIT_BUILDS_PER_HOUR = 2
    for step in ("echo 1", "echo 2"):
        assert post({"containerFile": dockerfile(step)}).status_code == 200
    joined = post({"containerFile": dockerfile("echo 1")})  # joins the running build: not a new build
    assert joined.status_code == 200
    response = post({"containerFile": dockerfile("echo 3")})
    assert response.status_code == 429
    assert 1 <= int(response["Retry-After"]) <= 3600
    assert response.json()["message"].startswith("Request exceeded build rate limit of 2 per hour")
    assert (ContainerRequest.objects.count(), Build.objects.count()) == (3, 2)  # nothing stored for the refused one
